r"""One converter module per source dataset; importing this package imports (and so registers) them all."""

import importlib
import pkgutil

from .base import CONVERTERS, register_converter


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


__all__ = ["CONVERTERS", "register_converter"]
