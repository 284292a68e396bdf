r"""The one registry pattern of the package: a name-to-object dict that refuses a name registered twice."""

import importlib
from typing import Any, TypeVar


T = TypeVar("T")


class Registry(dict[str, T]):
    r"""A dict of registered objects by name; `register` refuses duplicates, as LLaMA-Factory's registries do.

    >>> rewards = Registry("reward")
    >>> rewards.register("fea_format", len)
    <built-in function len>
    >>> rewards.register("fea_format", len)
    Traceback (most recent call last):
    ...
    ValueError: Reward fea_format already exists.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str, value: T) -> T:
        r"""Register `value` under `name` and return it; a name already registered is refused."""
        if name in self:
            raise ValueError(f"{self.kind.capitalize()} {name} already exists.")

        self[name] = value
        return value


def import_object(path: str, what: str = "object") -> Any:
    r"""Import `package.module.attribute` (a user's reward, engine factory, or a stage's runner); ValueError if it fails.

    >>> import_object("llamafactory_fea.registry.Registry").__name__
    'Registry'
    """
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"Cannot import the {what} {path!r}: {err}.") from err
