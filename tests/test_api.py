"""The top-level API: every exported name is the documented object, whatever was imported before."""

import importlib
import pkgutil
import types

import promptseg


def test_exports_survive_importing_every_submodule():
    for info in pkgutil.walk_packages(promptseg.__path__, prefix="promptseg."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    for name in promptseg.__all__:
        if name == "__version__":
            continue
        value = getattr(promptseg, name)
        assert not isinstance(value, types.ModuleType), f"promptseg.{name} is a module"
    assert callable(promptseg.segment) and callable(promptseg.load_volume) and callable(promptseg.build_segmenter)
