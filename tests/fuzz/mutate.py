"""Seeded mutations of seed files: bytes, binary header fields, text header lines, JSON/YAML trees.

Every mutation draws from one ``random.Random``, so a campaign with the same
seed produces the same inputs. The mutations aim at what breaks parsers:
boundary integers and floats written over header fields, NaN/inf/1e200/-1 in
text headers, repeated or missing lines, truncation, splices of two seeds,
deep nesting and huge counts in JSON/YAML documents.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct

INTERESTING_INTS = [0, 1, -1, 2, 3, 4, 7, 8, 16, 127, 128, 255, 256, 348, 352, 540, 1000, 32767, -32768,
                    65535, 2**31 - 1, -(2**31), 2**32 - 1, 2**63 - 1, -(2**63)]
INTERESTING_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e-7, 1e5, 1e6, 1e30, 1e38, 1e200, -1e200,
                      float("nan"), float("inf"), float("-inf"), 5e-324, 3.4e38]
INTERESTING_WORDS = ["-1", "0", "1", "3", "4", "5", "16", "17", "-0", "1e200", "-1e200", "1e-30", "1e-300", "nan",
                     "NaN", "inf", "-inf", "99999999999", "2147483648", "4294967296", "100000", "3.5", "0x10",
                     "", " ", "none", "LOCAL", "LIST", "/dev/zero", "seed.raw", "%d", "(1,0,0)", "(0,0,0)",
                     "(nan,0,0)", "(1e200,0,0)", "True", "False", "MET_STRING", "MET_LONG", "MET_DOUBLE",
                     "block", "double", "gzip", "bzip2", "raw", "ascii", "hex", "big", "little"]
JSON_VALUES = [None, True, False, 0, -1, 1, 2**31, 2**63, 10**30, -(10**30), 1e308, -1e308, 1e-308, 0.5,
               float("nan"), float("inf"), "", "x", "1", "\u0000", [], {}, [0], [0, 0],
               [0, 0, 0, 0], [1e308, 0, 0, 1e308], [-5, -5, 5, 5], [0, 0, 0, 0, 0, 0], [[0, 0]] * 3,
               {"0": [0, 0, 1, 1]}, {"-1": [0, 0, 1, 1], "999999": [0, 0, 1, 1]}, "a" * 1000]


class Mutator:
    """Mutate inputs (``{name: bytes}``) reproducibly.

    Args:
        rng: the campaign's random generator.
        kind: ``"binary"`` (NIfTI, NPZ, rasters, DICOM), ``"text-header"`` (NRRD,
            MetaImage), ``"document"`` (JSON prompt files, YAML configs), ``"request"``
            (HTTP request documents: as documents, fewer byte-level changes) or
            ``"file-set"`` (the files of a DICOM series: binary mutations of one
            file, or a file dropped, duplicated or replaced by another).
        first_only: mutate only the first file (the others are fixed companions,
            such as the series an RTSTRUCT refers to).
    """

    def __init__(self, rng: random.Random, kind: str, first_only: bool = False) -> None:
        self.rng, self.kind, self.first_only = rng, kind, first_only

    # -- entry point --------------------------------------------------------
    def mutate(self, files: dict[str, bytes], other: dict[str, bytes]) -> dict[str, bytes]:
        """A mutated copy of ``files``; ``other`` is a second seed for splicing."""
        out = dict(files)
        names = list(out)
        if self.kind == "file-set" and len(names) > 1 and self.rng.random() < 0.15:
            return self.file_set(out)
        target = names[0] if len(names) == 1 or self.first_only or self.rng.random() < 0.8 else self.rng.choice(names[1:])
        data = out[target]
        for _ in range(self.rng.choice((1, 1, 1, 2, 2, 3, 4))):
            data = self._one(data, other.get(target) or next(iter(other.values())))
        out[target] = data
        return out

    def _one(self, data: bytes, other: bytes) -> bytes:
        r = self.rng.random()
        if self.kind == "text-header" and r < 0.55:
            return self.text_line(data)
        if self.kind == "document" and r < 0.55 or self.kind == "request" and r < 0.9:
            return self.document(data)
        if data[128:132] == b"DICM" and r < 0.3:
            return self.dicom_element(data)
        if r < 0.62:
            return self.header_field(data)
        choices = (self.flip_bits, self.interesting_bytes, self.truncate, self.insert, self.delete,
                   self.duplicate, lambda d: self.splice(d, other))
        return self.rng.choice(choices)(data)

    def file_set(self, files: dict[str, bytes]) -> dict[str, bytes]:
        """Drop a file, add a copy of one under a new name, or overwrite one with another's bytes."""
        names = list(files)
        choice = self.rng.randrange(3)
        if choice == 0:
            del files[self.rng.choice(names)]
        elif choice == 1:
            files[f"copy-{self.rng.randrange(1000)}.dcm"] = files[self.rng.choice(names)]
        else:
            files[self.rng.choice(names)] = files[self.rng.choice(names)]
        return files

    # -- DICOM elements ---------------------------------------------------------
    def dicom_element(self, data: bytes) -> bytes:
        """Change the VR, length or value of an element the readers rely on (found by its tag's bytes)."""
        tags = [(0x0028, e) for e in (0x0002, 0x0004, 0x0006, 0x0008, 0x0010, 0x0011, 0x0030, 0x0100, 0x0101,
                                      0x0102, 0x0103, 0x1052, 0x1053)]
        tags += [(0x0020, 0x0032), (0x0020, 0x0037), (0x0020, 0x000E), (0x0020, 0x0013), (0x0020, 0x0052),
                 (0x0008, 0x0005), (0x0008, 0x0016), (0x0008, 0x0018), (0x0008, 0x0060), (0x0002, 0x0010),
                 (0x7FE0, 0x0010), (0x3006, 0x0020), (0x3006, 0x0022), (0x3006, 0x0039), (0x3006, 0x0040),
                 (0x3006, 0x0042), (0x3006, 0x0046), (0x3006, 0x0050), (0x3006, 0x0084), (0xFFFE, 0xE000)]
        group, element = self.rng.choice(tags)
        found = [m.start() for m in re.finditer(re.escape(struct.pack("<HH", group, element)), data)]
        if not found:
            return self.header_field(data)
        at = self.rng.choice(found) + 4
        explicit = data[at:at + 2].isalpha() and data[at:at + 2].isupper()
        what = self.rng.randrange(4)
        if what == 0 and explicit:  # another VR, known or not
            vr = self.rng.choice([b"UA", b"UM", b"SQ", b"OB", b"UN", b"US", b"DS", b"FD", b"\x00\x00", b"ZZ"])
            return data[:at] + vr + data[at + 2:]
        if what == 1:  # the length
            offset, width = (at + 2, 2) if explicit and data[at:at + 2] not in (b"OB", b"OW", b"SQ", b"UN", b"UT") \
                else ((at + 4, 4) if explicit else (at, 4))
            value = self.rng.choice(INTERESTING_INTS + [0xFFFFFFFF, 0xFFFFFFF0]) % (2 ** (8 * width))
            return data[:offset] + value.to_bytes(width, "little") + data[offset + width:]
        start = at + (4 if not explicit else (8 if data[at:at + 2] in (b"OB", b"OW", b"SQ", b"UN", b"UT") else 4))
        length = int.from_bytes(data[start - (4 if not explicit or start - at == 8 else 2):start], "little")
        if length > 64:
            return self.header_field(data)
        word = self.rng.choice(INTERESTING_WORDS).encode()
        word += b" " * (len(word) % 2)
        if self.rng.random() < 0.5:  # keep the element's length: overwrite its value
            return data[:start] + (word * (length // max(len(word), 1) + 1))[:length] + data[start + length:]
        return data[:start] + word + data[start + length:]  # a value of another length (the length field now lies)

    # -- byte-level -----------------------------------------------------------
    def _offset(self, data: bytes, width: int = 1) -> int:
        if len(data) <= width:
            return 0
        if self.rng.random() < 0.7:  # headers are where parsing happens
            return self.rng.randrange(0, max(1, min(len(data) - width, 1024)))
        return self.rng.randrange(0, len(data) - width)

    def flip_bits(self, data: bytes) -> bytes:
        if not data:
            return data
        buf = bytearray(data)
        for _ in range(self.rng.randint(1, 8)):
            i = self._offset(buf)
            buf[i] ^= 1 << self.rng.randrange(8)
        return bytes(buf)

    def interesting_bytes(self, data: bytes) -> bytes:
        if not data:
            return data
        buf = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            buf[self._offset(buf)] = self.rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x0A, 0x20, 0x3D))
        return bytes(buf)

    def header_field(self, data: bytes) -> bytes:
        """Overwrite an aligned 2/4/8-byte field (usually in the first KiB) with a boundary int or float."""
        width = self.rng.choice((2, 4, 4, 8))
        if len(data) < width:
            return data
        offset = self._offset(data, width) // 2 * 2
        order = self.rng.choice("<>")
        if self.rng.random() < 0.5 and width >= 4:
            value = self.rng.choice(INTERESTING_FLOATS)
            if width == 4 and math.isfinite(value) and abs(value) > 3.4e38:
                value = math.copysign(math.inf, value)
            packed = struct.pack(order + ("f" if width == 4 else "d"), value)
        else:
            bits = width * 8
            value = self.rng.choice(INTERESTING_INTS) % (2**bits)
            packed = value.to_bytes(width, "little" if order == "<" else "big")
        return data[:offset] + packed + data[offset + width:]

    def truncate(self, data: bytes) -> bytes:
        return data[: self.rng.randrange(0, max(1, len(data)))]

    def insert(self, data: bytes) -> bytes:
        at = self._offset(data)
        chunk = bytes(self.rng.randrange(256) for _ in range(self.rng.choice((1, 4, 16, 100))))
        return data[:at] + chunk + data[at:]

    def delete(self, data: bytes) -> bytes:
        at = self._offset(data)
        return data[:at] + data[at + self.rng.choice((1, 2, 4, 16, 100)):]

    def duplicate(self, data: bytes) -> bytes:
        at = self._offset(data)
        size = self.rng.choice((4, 16, 64, 512))
        return data[:at] + data[at:at + size] * self.rng.choice((2, 3, 50)) + data[at:]

    def splice(self, data: bytes, other: bytes) -> bytes:
        if not data or not other:
            return data
        cut = self.rng.randrange(len(data))
        return data[:cut] + other[self.rng.randrange(len(other)):]

    # -- text headers ---------------------------------------------------------
    def text_line(self, data: bytes) -> bytes:
        """Change one header line of a NRRD/MetaImage file (the text before the voxel data)."""
        end = data.find(b"\n\n")
        if end < 0:
            end = data.find(b"ElementDataFile")
            end = data.find(b"\n", end) if end >= 0 else -1
        if end < 0:
            end = len(data)
        head, tail = data[:end], data[end:]
        lines = head.split(b"\n")
        i = self.rng.randrange(len(lines))
        op = self.rng.random()
        if op < 0.55:  # replace one token with an interesting word
            tokens = re.split(rb"([ ,()=:]+)", lines[i])
            spots = [k for k, t in enumerate(tokens) if t and not re.fullmatch(rb"[ ,()=:]+", t)]
            if spots:
                k = self.rng.choice(spots[1:] or spots)
                tokens[k] = self.rng.choice(INTERESTING_WORDS).encode()
                lines[i] = b"".join(tokens)
        elif op < 0.65:
            lines.insert(i, lines[i])
        elif op < 0.75:
            del lines[i]
        elif op < 0.82:
            j = self.rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op < 0.9:
            lines[i] = lines[i].swapcase() if self.rng.random() < 0.5 else lines[i].replace(b" ", b"")
        else:
            lines.insert(i, self.rng.choice((b"garbage", b"NDims = 1000", b"dimension: 17", b"sizes: 0",
                                             b"data file: /dev/zero", b"ElementDataFile = /dev/zero",
                                             b"space directions: (0,0,0) (0,1,0) (0,0,1)", b": ", b"=")))
        return b"\n".join(lines) + tail

    # -- JSON / YAML documents --------------------------------------------------
    def document(self, data: bytes) -> bytes:
        if len(data) > 20000:  # already inflated by an earlier mutation: re-parsing it would be slow
            return self.flip_bits(data)
        try:
            import yaml

            doc = yaml.safe_load(data.decode("utf-8"))
        except Exception:  # the input is already broken: mutate its bytes instead
            return self.flip_bits(data)
        if self.kind == "request" and isinstance(doc, dict) and "path" in doc and self.rng.random() < 0.75:
            return self._request_body(doc)
        op = self.rng.random()
        if op < 0.08:  # deep nesting
            depth = self.rng.choice((100, 1000, 50000))
            return (b"[" * depth + b"1" + b"]" * depth) if self.rng.random() < 0.5 else (
                b'{"objects": ' + b"[" * depth + b"]" * depth + b"}")
        if op < 0.14 and isinstance(doc, dict):  # many objects / entries
            count = self.rng.choice((1000, 65536, 70000))
            item = self.rng.choice((json.loads('{"slice": 0, "box": [0, 0, 1, 1]}'), {}, {"label": 1}))
            doc = {"objects": [item] * count}
            return json.dumps(doc).encode()
        doc = self._tree(doc, depth=0)
        if self.rng.random() < 0.5:
            return json.dumps(doc, allow_nan=True).encode()
        return yaml.safe_dump(doc, allow_unicode=True).encode()

    def _request_body(self, doc: dict) -> bytes:
        """Mutate an HTTP request document's body, keeping its method and path."""
        doc = dict(doc)
        op = self.rng.random()
        if op < 0.06:  # a deeply nested or a huge body
            depth = self.rng.choice((100, 1000, 50000))
            doc.pop("json", None)
            doc["raw"] = "[" * depth + "1" + "]" * depth
        elif op < 0.1:
            doc["json"] = {"slices": [{"slice": 0, "bbox": [0, 0, 0, 0], "bits": "AA=="}] * self.rng.choice((1000, 70000)),
                           "label": 1}
        elif op < 0.16:  # not JSON at all, or JSON with a NaN
            doc.pop("json", None)
            doc["raw"] = self.rng.choice(('{"label": NaN, "slice": 0}', "{", "", "null", "\x00", '{"slice": 1e999}',
                                          '{"path": "scan.nii.gz", "path": "../secret.nii.gz"}'))
        else:
            doc["json"] = self._tree(doc.get("json", {}), depth=0)
        return json.dumps(doc, allow_nan=True).encode()

    def _tree(self, node, depth: int):
        r = self.rng.random()
        if isinstance(node, dict) and node and r < 0.8:
            key = self.rng.choice(list(node))
            action = self.rng.random()
            node = dict(node)
            if action < 0.6:
                node[key] = self._tree(node[key], depth + 1)
            elif action < 0.75:
                del node[key]
            elif action < 0.9:
                node[self.rng.choice(("extra", "label", "slice", "box", "objects", "epochs", key + "x"))] = \
                    self.rng.choice(JSON_VALUES)
            else:
                node = self.rng.choice(JSON_VALUES)
            return node
        if isinstance(node, list) and node and r < 0.8:
            node = list(node)
            i = self.rng.randrange(len(node))
            action = self.rng.random()
            if action < 0.6:
                node[i] = self._tree(node[i], depth + 1)
            elif action < 0.8:
                node.append(self.rng.choice(JSON_VALUES))
            else:
                del node[i]
            return node
        return self.rng.choice(JSON_VALUES)
