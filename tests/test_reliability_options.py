"""Options are validated in the library (CLI, server and DICOM node get the same errors), before any
work: issue 15's CLI reproducers that ended in tracebacks."""

import math

import pytest

from promptseg.device import check_device_name, resolve_device
from promptseg.errors import OptionError, PromptsegError
from promptseg.inference.stop_rule import StopRule
from promptseg.training.config import ConfigError, load_config

from datafiles import image


@pytest.mark.parametrize("kwargs, message", [
    ({"continuity_iou": 5}, r"stop rule continuity_iou must be a number in \[0, 1\], got 5"),
    ({"continuity_iou": math.nan}, r"stop rule continuity_iou must be a number in \[0, 1\], got nan"),
    ({"extent_factor": -1}, r"stop rule extent_factor must be a number > 0 \(inf: appearance alone\), got -1"),
    ({"extent_factor": math.nan}, r"extent_factor must be a number > 0"),
    ({"min_object_fraction": 2}, r"stop rule min_object_fraction must be a number in \[0, 1\], got 2"),
    ({"min_object_fraction": "half"}, r"min_object_fraction must be a number in \[0, 1\], got 'half'"),
    ({"min_area": 0}, r"stop rule min_area must be an integer >= 1, got 0"),
    ({"min_area": 1.5}, r"min_area must be an integer >= 1, got 1.5"),
])
def test_stop_rule_refuses_bad_parameters_with_a_typed_error(kwargs, message):
    with pytest.raises(OptionError, match=message):
        StopRule(**kwargs)


def test_stop_rule_accepts_its_documented_range():
    rule = StopRule(extent_factor=math.inf, continuity_iou=0, min_object_fraction=1, min_area=3)
    assert rule.extent_factor == math.inf and rule.continuity_iou == 0.0 and rule.min_object_fraction == 1.0
    assert issubclass(OptionError, PromptsegError) and issubclass(OptionError, ValueError)


@pytest.mark.parametrize("name", ["tpu:7", "cuda:-1", "gpu", "", "cpu:0:1", "cuda:1000000"])
def test_malformed_device_names(name):
    with pytest.raises(OptionError, match=r"is not one of auto, cpu, cuda, cuda:N or mps"):
        check_device_name(name)


def test_devices_this_machine_lacks():
    import torch

    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("CPU ") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match=r"device 'cuda:0' requested but no CUDA GPU is available"):
            resolve_device("cuda:0")
    else:
        count = torch.cuda.device_count()
        with pytest.raises(OptionError, match=rf"this machine has {count} CUDA GPU"):
            resolve_device(f"cuda:{count}")


def test_training_config_device_is_checked():
    with pytest.raises(ConfigError, match=r"train.device: .*device 'tpu:7' is not one of"):
        load_config(overrides=["data.prepared=/tmp/x", "train.device=tpu:7"])
    assert load_config(overrides=["data.prepared=/tmp/x", "train.device=CUDA:1"]).train.device == "cuda:1"


@pytest.mark.parametrize("option, message", [
    (["--stop-iou", "5"], "stop rule continuity_iou must be a number in [0, 1], got 5.0"),
    (["--stop-iou", "nan"], "stop rule continuity_iou must be a number in [0, 1], got nan"),
    (["--stop-extent", "-1"], "stop rule extent_factor must be a number > 0 (inf: appearance alone), got -1.0"),
    (["--stop-appearance", "2"], "stop rule min_object_fraction must be a number in [0, 1], got 2.0"),
    (["--device", "tpu:7"], "device 'tpu:7' is not one of auto, cpu, cuda, cuda:N or mps"),
])
def test_cli_options_fail_up_front_with_one_line(tmp_path, capsys, option, message):
    from promptseg.cli import main

    status = main(["segment", str(image("breast1")), "-o", str(tmp_path / "m.nii.gz"), "--box", "20,60,30,75",
                   "--slice", "10", *option])
    assert status == 2
    assert capsys.readouterr().err == f"promptseg: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_config_errors_stay_one_readable_line():
    parts = "[" + ",".join(f"part{i}" for i in range(40)) + "]"
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["data.prepared=/tmp/x", f"trainable.parts={parts}"])
    message = str(info.value)
    assert message.endswith("; and 35 more") and "\n" not in message and len(message) < 1000
