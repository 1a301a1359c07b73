"""The registry: every backend is listed with what a user needs, and its architecture is upstream's.

Building the full-size networks would cost gigabytes, so the architectures are checked at
their source: the encoder sizes segment-anything's own builders pass, and the hydra configs
the sam2 package ships.
"""

import numpy as np
import pytest

from promptseg.models.registry import MODELS, build_preprocessing
from promptseg.models.sam import VARIANTS as SAM_VARIANTS
from promptseg.models.sam import VIT_SIZES
from promptseg.models.sam2 import HIERA_SIZES
from promptseg.models.sam2 import VARIANTS as SAM2_VARIANTS

EXPECTED = {
    "litemedsam", "sam-vit-b", "sam-vit-l", "sam-vit-h", "medsam-vit-b", "mobilesam",
    *(f"{family}-hiera-{size}" for family in ("sam2", "sam2.1") for size in ("tiny", "small", "base-plus", "large")),
    "medsam2",
}


def test_every_family_is_registered_with_its_checkpoint_and_source(capsys):
    from promptseg.cli import main

    assert set(MODELS) == EXPECTED
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    for name, spec in MODELS.items():
        assert f"\n{name}\n" in f"\n{listing}"
        assert spec.checkpoint in listing and spec.normalisation in listing
        assert spec.needs_checkpoint == (name not in ("litemedsam", "mobilesam"))  # weights in a package
        assert ("memory" in spec.propagation) == (name.startswith("sam2") or name == "medsam2")
        block = f"\n{listing}".split(f"\n{name}\n", 1)[1]
        also = block.split("  also: ", 1)[1].splitlines()[0]
        assert ("memory propagation" in also) == ("memory" in spec.propagation) and "fine-tuning" in also
    assert MODELS["medsam2"].input_size == 512 and MODELS["sam-vit-h"].input_size == 1024


@pytest.mark.parametrize("name", sorted(SAM_VARIANTS))
def test_sam_encoder_sizes_are_the_ones_segment_anything_builds(name, monkeypatch):
    import importlib

    upstream = importlib.import_module("segment_anything.build_sam")  # the module, not the function
    seen = {}
    monkeypatch.setattr(upstream, "_build_sam", lambda **kwargs: seen.update(kwargs))
    vit = SAM_VARIANTS[name].vit
    upstream.sam_model_registry[vit](checkpoint=None)
    size = VIT_SIZES[vit]
    assert (seen["encoder_embed_dim"], seen["encoder_depth"], seen["encoder_num_heads"],
            list(seen["encoder_global_attn_indexes"])) == (size.embed_dim, size.depth, size.num_heads,
                                                           list(size.global_attn_indexes))


@pytest.mark.parametrize("name", sorted(SAM2_VARIANTS))
def test_sam2_variants_compose_from_the_packaged_configs(name):
    import sam2  # noqa: F401  (registers sam2's config search path with hydra)
    from hydra import compose

    variant = SAM2_VARIANTS[name]
    cfg = compose(config_name=variant.config, overrides=list(variant.overrides)).model
    assert cfg.image_size == variant.image_size
    import inspect

    from sam2.modeling.backbones.hieradet import Hiera

    trunk = cfg.image_encoder.trunk
    stages = trunk.get("stages", inspect.signature(Hiera).parameters["stages"].default)  # b+ uses Hiera's default
    assert (trunk.embed_dim, sum(stages)) == HIERA_SIZES[variant.size]
    assert (variant.family == "sam2.1") == ("no_obj_embed_spatial" in cfg and bool(cfg.no_obj_embed_spatial))
    assert variant.checkpoint_file.endswith(".pt") and variant.source


@pytest.mark.parametrize("name", sorted(EXPECTED - {"litemedsam"}))
def test_preparing_samples_needs_no_weights(name):
    pre = build_preprocessing(name)
    assert pre.name == name and pre.input_size == MODELS[name].input_size
    image = (np.arange(300 * 200) % 251).astype(np.uint8).reshape(300, 200)
    prepared, size = pre.prepare_slice(image)
    assert prepared.shape == (pre.input_size, pre.input_size) and prepared.dtype == np.uint8
    assert pre.prepare_mask(image > 100).shape == (pre.input_size, pre.input_size)
    assert pre.model_input(prepared, size).shape == (3, pre.input_size, pre.input_size)


# ---------------------------------------------------------------------------
# declared capabilities


def _segmenter_class(name):
    from promptseg.models.litemedsam import LiteMedSAM
    from promptseg.models.mobilesam import MobileSamSegmenter
    from promptseg.models.sam import SamSegmenter
    from promptseg.models.sam2 import SAM2Segmenter

    if name == "litemedsam":
        return LiteMedSAM
    if name == "mobilesam":
        return MobileSamSegmenter
    return SamSegmenter if name in SAM_VARIANTS else SAM2Segmenter


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_declared_capability_comes_with_its_interface(name):
    from promptseg.models.capabilities import INTERFACES, Capability

    spec = MODELS[name]
    cls = _segmenter_class(name)
    assert Capability.FINE_TUNING in spec.capabilities
    for capability in spec.capabilities:
        interface = INTERFACES[capability]
        if interface is None:
            continue
        members = [m for m in vars(interface) if not m.startswith("_")] + list(interface.__annotations__)
        missing = [m for m in members if not hasattr(cls, m)]
        assert not missing, f"{name} declares {capability.name} but its class lacks {missing}"
    expected = {Capability.FINE_TUNING}
    if name in SAM2_VARIANTS:
        expected.add(Capability.MEMORY_PROPAGATION)
    else:
        expected.add(Capability.CACHED_EMBEDDINGS)
    if (name in SAM_VARIANTS and SAM_VARIANTS[name].automatic) or name == "mobilesam":
        expected.add(Capability.AUTOMATIC_MASKS)
    assert spec.capabilities == frozenset(expected)


def test_a_missing_capability_is_one_line_before_anything_loads():
    from promptseg.errors import ModelError
    from promptseg.models import Capability, backends_with, require

    require("medsam2", Capability.MEMORY_PROPAGATION)  # declared: no error, nothing built
    with pytest.raises(ModelError, match=r"^model litemedsam has no memory propagation: use --propagation chain$"):
        require("litemedsam", Capability.MEMORY_PROPAGATION, "use --propagation chain")
    with pytest.raises(ModelError, match=r"model medsam-vit-b has no automatic mask generation \(backends that have "
                                         r"it: sam-vit-b, sam-vit-l, sam-vit-h, mobilesam\)"):
        require("medsam-vit-b", Capability.AUTOMATIC_MASKS)
    with pytest.raises(ModelError, match="unknown model 'sam9'"):
        require("sam9", Capability.FINE_TUNING)
    assert backends_with(Capability.RESIZABLE_INPUT) == []


def test_built_segmenters_carry_their_specs_capabilities():
    from model_cache import litemedsam

    assert litemedsam().capabilities == MODELS["litemedsam"].capabilities
