r"""Imported by `llamafactory_fea.pth` at every interpreter start: installs a post-import hook, nothing heavy.

When LLaMA-Factory modules named in `HOOKED_MODULES` are imported (in any process: the CLI, a torchrun child,
LLaMA Board's training subprocess, a Ray worker), `llamafactory_fea.integration.on_import` patches them.
Set `LLAMAFACTORY_FEA_DISABLE=1` to switch the plugin off.
"""

import os
import sys
from importlib.machinery import PathFinder


DISABLE_ENV = "LLAMAFACTORY_FEA_DISABLE"
HOOKED_MODULES = frozenset(
    {
        "llamafactory.extras.constants",
        "llamafactory.train.tuner",
        "llamafactory.webui.common",
        "llamafactory.webui.components.train",
        "llamafactory.webui.control",
        "llamafactory.webui.runner",
    }
)


class _PatchingLoader:
    r"""Wraps a module loader so that `integration.on_import` runs once the module has been executed."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        from llamafactory_fea.integration import on_import

        on_import(module)


class _PostImportFinder:
    r"""A meta path finder that answers only for the hooked LLaMA-Factory modules."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in HOOKED_MODULES:
            return None

        spec = PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)

        return spec


def enabled() -> bool:
    r"""Whether the plugin is switched on (it is unless `LLAMAFACTORY_FEA_DISABLE` is 1, true, yes or on)."""
    return os.getenv(DISABLE_ENV, "0").strip().lower() not in ("1", "true", "yes", "on")


if enabled() and not any(isinstance(finder, _PostImportFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _PostImportFinder())
