"""The DICOM node's configuration: one YAML file, validated with pydantic.

Sections (see ``docs/dicom.md``, section "DICOM node", and ``examples/dicom-node.yaml``):

* ``node``: the node's own AE title, address, port, optional TLS, storage folder,
  the quiet period that completes a series, the size limit per association;
* ``allowed_callers``: the AE titles (and optionally IP addresses / networks) allowed to send;
* ``destinations``: named C-STORE peers the results go to;
* ``retry``: bounded attempts with exponential back-off for sending;
* ``rules``: which series to segment, with which model and prompts, into which output.

Unknown keys are errors. Relative paths are relative to the config file. Every
regular expression is matched against the *whole* value, ignoring case.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import NodeConfigError

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars, no backslash, no control characters
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: Union[int, str]) -> int:
    """Bytes from ``1048576``, ``"500 MB"``, ``"2 GiB"`` (decimal kB/MB/GB, binary KiB/MiB/GiB)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 2000000000 or '2 GB'")
    if isinstance(value, int):
        number, unit = float(value), "b"
    else:
        found = _SIZE.match(str(value))
        if not found:
            raise ValueError(f"{value!r} is not a size such as 2000000000, '500 MB' or '2 GiB'")
        number, unit = float(found.group(1)), (found.group(2) or "b").lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return size


def compile_pattern(pattern: str) -> re.Pattern:
    """A regular expression matched against whole values, case-insensitive."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"{pattern!r} is not a valid regular expression ({error})") from None


def _check_ae(value: str) -> str:
    value = value.strip()
    if not _AE_TITLE.match(value):
        raise ValueError(f"{value!r} is not an AE title: 1 to 16 printable characters, no backslash")
    return value


AETitle = Annotated[str, AfterValidator(_check_ae)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerTls(_Strict):
    """TLS for incoming associations (DICOM over TLS, e.g. port 2762)."""

    certificate: Path
    private_key: Path
    ca_certificates: Optional[Path] = None
    require_client_certificate: bool = False

    @model_validator(mode="after")
    def _client_auth_needs_ca(self):
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError("require_client_certificate needs ca_certificates (the CA that signed the callers' certificates)")
        return self


class ClientTls(_Strict):
    """TLS for outgoing associations to a destination."""

    ca_certificates: Optional[Path] = None
    certificate: Optional[Path] = None
    private_key: Optional[Path] = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self):
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give certificate and private_key together (client authentication) or neither")
        return self


class NodeSection(_Strict):
    """The node itself."""

    ae_title: AETitle
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=0, le=65535)
    storage: Path
    quiet_seconds: float = Field(default=30.0, gt=0)
    max_association_bytes: int = 4 * 10**9
    tls: Optional[ServerTls] = None

    @field_validator("max_association_bytes", mode="before")
    @classmethod
    def _size(cls, value):
        return parse_size(value)


class Caller(_Strict):
    """A peer allowed to send: its AE title and, optionally, the addresses it may call from."""

    ae_title: AETitle
    addresses: list[str] = Field(default_factory=list)

    @field_validator("addresses")
    @classmethod
    def _networks(cls, values):
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)") from None
        return values

    def allows(self, address: str) -> bool:
        """True if ``address`` (an IP) may call with this AE title (any address when none are listed)."""
        if not self.addresses:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(net, strict=False) for net in self.addresses)


class Destination(_Strict):
    """A C-STORE SCP the results are sent to."""

    ae_title: AETitle
    host: str
    port: int = Field(ge=1, le=65535)
    tls: Optional[ClientTls] = None


class RetrySection(_Strict):
    """Sending: ``max_attempts`` tries, waiting ``initial_delay_seconds * backoff_factor**(n-1)`` (at most ``max_delay_seconds``) after the n-th failure."""

    max_attempts: int = Field(default=5, ge=1)
    initial_delay_seconds: float = Field(default=10.0, ge=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    max_delay_seconds: float = Field(default=900.0, ge=0)

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based)."""
        return min(self.max_delay_seconds, self.initial_delay_seconds * self.backoff_factor ** (failures - 1))


class Match(_Strict):
    """Conditions on a series; every one given must hold (none given: every image series matches)."""

    modality: Optional[list[str]] = None
    series_description: Optional[str] = None
    body_part: Optional[str] = None
    calling_ae: Optional[list[AETitle]] = None

    @field_validator("modality")
    @classmethod
    def _upper(cls, values):
        return None if values is None else [v.strip().upper() for v in values]

    @field_validator("series_description", "body_part")
    @classmethod
    def _regex(cls, value):
        if value is not None:
            compile_pattern(value)
        return value


class PromptItem(_Strict):
    """One object to segment: prompted by an ROI of an RTSTRUCT of the same study, or by a fixed box."""

    roi: Optional[str] = None
    box: Optional[list[float]] = None
    slice: Union[int, Literal["middle"]] = "middle"
    label: int = Field(default=1, ge=1, le=65535)
    name: Optional[str] = None

    @field_validator("roi")
    @classmethod
    def _regex(cls, value):
        if value is not None:
            compile_pattern(value)
        return value

    @field_validator("box")
    @classmethod
    def _box(cls, value):
        if value is not None and (len(value) != 4 or value[0] > value[2] or value[1] > value[3]):
            raise ValueError("a box is [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1 (voxel indices)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data):
        if isinstance(data, dict):
            given = [key for key in ("roi", "box") if data.get(key) is not None]
            if len(given) != 1:
                raise ValueError("give exactly one of roi (an ROI name pattern) or box ([x0, y0, x1, y1])")
            if "roi" in given and "slice" in data:
                raise ValueError("slice goes with box; an roi prompt uses the ROI's largest cross-section")
        return data


class Output(_Strict):
    """What a rule produces and where it goes."""

    format: Literal["rtstruct", "seg"] = "rtstruct"
    series_description: str = Field(default="promptseg", max_length=64)
    send_to: list[str] = Field(default_factory=list)
    folder: Optional[Path] = None

    @model_validator(mode="after")
    def _somewhere(self):
        if not self.send_to and self.folder is None:
            raise ValueError("say where results go: send_to (destination names) and/or folder")
        return self


class Rule(_Strict):
    """The first rule whose ``match`` holds for a complete series decides what happens to it."""

    name: str
    match: Match = Field(default_factory=Match)
    model: str = "litemedsam"
    checkpoint: Optional[Path] = None
    prompts: Optional[list[PromptItem]] = None
    prompt_file: Optional[Path] = None
    output: Output

    @model_validator(mode="after")
    def _prompts(self):
        if (self.prompts is None) == (self.prompt_file is None):
            raise ValueError("give either prompts (a list of roi/box items) or prompt_file, not both")
        if self.prompts is not None:
            if not self.prompts:
                raise ValueError("prompts is empty")
            labels = [item.label for item in self.prompts]
            if len(set(labels)) != len(labels):
                raise ValueError(f"prompts: labels repeat ({labels}); give each object its own label")
        return self


class NodeConfig(_Strict):
    """The whole configuration (see the module docstring)."""

    node: NodeSection
    allowed_callers: list[Caller] = Field(min_length=1)
    destinations: dict[str, Destination] = Field(default_factory=dict)
    retry: RetrySection = Field(default_factory=RetrySection)
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self):
        for i, rule in enumerate(self.rules):
            for name in rule.output.send_to:
                if name not in self.destinations:
                    known = ", ".join(sorted(self.destinations)) or "none"
                    raise ValueError(f"rules.{i}.output.send_to: unknown destination {name!r} (configured: {known})")
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rules: names repeat ({names})")
        return self

    def caller(self, ae_title: str) -> Optional[Caller]:
        """The allow-list entry of ``ae_title``, or None."""
        ae_title = ae_title.strip()
        return next((c for c in self.allowed_callers if c.ae_title == ae_title), None)


def _resolve(doc: dict, folder: Path) -> None:
    """Make the config's relative paths relative to its folder (in place)."""

    def fix(node, key: str) -> None:
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, str) and value:
            path = Path(value).expanduser()
            node[key] = str(path) if path.is_absolute() else os.path.normpath(folder / path)

    def section(node, key: str):
        value = node.get(key) if isinstance(node, dict) else None
        return value if isinstance(value, (dict, list)) else None

    node = section(doc, "node")
    fix(node, "storage")
    for key in ("certificate", "private_key", "ca_certificates"):
        fix(section(node, "tls"), key)
    destinations = section(doc, "destinations")
    for destination in destinations.values() if isinstance(destinations, dict) else ():
        for key in ("ca_certificates", "certificate", "private_key"):
            fix(section(destination, "tls"), key)
    rules = section(doc, "rules")
    for rule in rules if isinstance(rules, list) else ():
        fix(rule, "checkpoint")
        fix(rule, "prompt_file")
        fix(section(rule, "output"), "folder")


def _message(source: str, error: ValidationError) -> str:
    problems = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{where}: {msg}" if where else msg)
    return f"{source}: " + "; ".join(problems)


def _check_files(config: NodeConfig, source: str) -> None:
    files = []
    if config.node.tls:
        tls = config.node.tls
        files += [("node.tls.certificate", tls.certificate), ("node.tls.private_key", tls.private_key),
                  ("node.tls.ca_certificates", tls.ca_certificates)]
    for name, dest in config.destinations.items():
        if dest.tls:
            for key in ("ca_certificates", "certificate", "private_key"):
                files.append((f"destinations.{name}.tls.{key}", getattr(dest.tls, key)))
    for i, rule in enumerate(config.rules):
        files += [(f"rules.{i}.checkpoint", rule.checkpoint), (f"rules.{i}.prompt_file", rule.prompt_file)]
    for where, path in files:
        if path is not None and not Path(path).is_file():
            raise NodeConfigError(f"{source}: {where}: file not found: {path}")


def validate_config(doc: object, source: str = "config", folder: Optional[Path] = None) -> NodeConfig:
    """Validate a decoded config document (relative paths resolved against ``folder``, default: the current folder).

    Raises:
        NodeConfigError: one line naming each wrong key by its dotted path.
    """
    if not isinstance(doc, dict):
        raise NodeConfigError(f"{source}: the top level must be a mapping with node, allowed_callers, destinations, retry, rules")
    doc = yaml.safe_load(yaml.safe_dump(doc))  # a deep copy that _resolve may change
    _resolve(doc, Path(folder) if folder is not None else Path.cwd())
    try:
        config = NodeConfig.model_validate(doc)
    except ValidationError as error:
        raise NodeConfigError(_message(source, error)) from None
    _check_files(config, source)
    return config


def load_config(path) -> NodeConfig:
    """Read and validate a node config YAML file.

    Raises:
        NodeConfigError: missing file, invalid YAML, unknown keys, wrong values, missing referenced files.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NodeConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise NodeConfigError(f"cannot read config file {path}: {error}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise NodeConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    return validate_config(doc, source=str(path), folder=path.resolve().parent)
