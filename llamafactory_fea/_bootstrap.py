r"""Imported by `llamafactory_fea.pth` at every interpreter start: installs a post-import hook, nothing heavy.

When a LLaMA-Factory module that `llamafactory_fea.seam` patches is imported (in any process: the CLI, a torchrun
child, LLaMA Board's training subprocess, a Ray worker), `seam.on_import` patches it; `seam.py` says why a hook.
The hook answers only for `llamafactory.*` names and reads the hooked modules from the seam's table on the first.
Set `LLAMAFACTORY_FEA_DISABLE=1` to switch the plugin off: the hook stays, and the seam then only makes a plugin
stage or key say that the plugin is off (stock stages run untouched).
"""

import sys
from importlib.machinery import PathFinder


HOST_PREFIX = "llamafactory."


class _PatchingLoader:
    r"""Wraps a module loader so that `seam.on_import` runs once the module has been executed."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        from llamafactory_fea.seam import on_import

        on_import(module)


class _PostImportFinder:
    r"""A meta path finder that answers only for the LLaMA-Factory modules in the seam's table."""

    def find_spec(self, fullname: str, path=None, target=None):
        if not fullname.startswith(HOST_PREFIX):
            return None

        from llamafactory_fea.seam import HOOKED_MODULES

        if fullname not in HOOKED_MODULES:
            return None

        spec = PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)

        return spec


if not any(isinstance(finder, _PostImportFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _PostImportFinder())
