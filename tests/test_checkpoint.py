"""The strict checkpoint loader: every layout users have, and every way a file can be wrong."""


import pytest
import torch

from promptseg.errors import CheckpointError
from promptseg.models.checkpoint import check_state_dict, extract_state_dict, load_weights, read_checkpoint


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, 1)


@pytest.fixture
def trained():
    torch.manual_seed(0)
    return Tiny()


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd, "epoch": 3},
        lambda sd: {"state_dict": sd, "optimizer": {}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 2,
                    "pytorch-lightning_version": "2.6.6"},
        lambda sd: {"state_dict": {f"net.sam.{k}": v for k, v in sd.items()}},
    ],
    ids=["plain", "model", "state_dict", "module-prefix", "model+module", "lightning", "lightning-nested"],
)
def test_accepted_layouts_load_exactly(tmp_path, trained, wrap):
    path = tmp_path / "w.pth"
    torch.save(wrap(trained.state_dict()), path)
    fresh = Tiny()
    digest = load_weights(fresh, path)
    assert _same(fresh, trained) and len(digest) == 16


def test_missing_unexpected_and_mismatched_keys_are_named(tmp_path, trained):
    sd = trained.state_dict()
    sd.pop("head.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["encoder.weight"] = torch.zeros(5, 3)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    fresh = Tiny()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_weights(fresh, path)
    msg = str(err.value)
    assert "1 missing keys: head.bias" in msg
    assert "1 unexpected keys: extra.weight" in msg
    assert "1 shape mismatches: encoder.weight (5, 3) != (4, 3)" in msg
    assert "\n" not in msg
    # nothing was loaded
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_unreadable_files(tmp_path, trained):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pth"):
        read_checkpoint(tmp_path / "nope.pth")
    path = tmp_path / "w.pth"
    torch.save(trained.state_dict(), path)
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*cut.pth"):
        read_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.pth"):
        read_checkpoint(tmp_path / "text.pth")


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        read_checkpoint(path)


def test_not_a_state_dict():
    with pytest.raises(CheckpointError, match="holds no state dict"):
        extract_state_dict([1, 2], source="x.pth")
    with pytest.raises(CheckpointError, match=r"has no 'model' or 'state_dict' entry \(top-level keys: epoch, lr\)"):
        extract_state_dict({"epoch": 3, "lr": 0.1}, source="x.pth")


def test_check_state_dict_accepts_exact_match(trained):
    check_state_dict(Tiny(), trained.state_dict(), source="ok")
