r"""One converter per source dataset; importing this package registers them all."""

from ..convert import CONVERTERS, register_converter


__all__ = ["CONVERTERS", "register_converter"]
