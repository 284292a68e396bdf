r"""The one registry pattern of the package: a name-to-object dict that refuses a name registered twice."""

from typing import TypeVar


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
