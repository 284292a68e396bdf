r"""What the plugin's argument dataclasses share: the one comma splitter, and checks derived from the field types.

LLaMA-Factory reads a YAML with `HfArgumentParser.parse_dict`, which converts nothing: a value arrives with its YAML
(or OmegaConf `key=value`) type. `check_types` converts each value to its field's annotation (int, float, bool,
`Literal` choices, optional) or refuses it, naming the key; bounds are the dataclass's own `check_bounds` call.
Light: imported at every training start, so the standard library only.
"""

import math
import operator
import types
from dataclasses import fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


TRUE, FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


class ArgumentError(ValueError):
    r"""A plugin key with a wrong type or value; the message names the key and what it accepts."""


def split_arg(value: Any) -> list[Any]:
    r"""A comma-separated string or a list as a list: items stripped, empty items dropped, None empty.

    >>> split_arg(" fea_format , fea_au_f1,"), split_arg(["a", "b"]), split_arg(None)
    (['fea_format', 'fea_au_f1'], ['a', 'b'], [])
    """
    if value is None:
        return []

    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]

    return list(value)


def _expected(annotation: Any) -> str:
    r"""What a value of this annotation must be, in words."""
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(map(str, get_args(annotation)))

    if get_origin(annotation) is list:
        return f"a list or a comma-separated string, each item {_expected(get_args(annotation)[0])}"

    return EXPECTED.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _convert(annotation: Any, value: Any) -> Any:
    r"""`value` as `annotation`, or TypeError / ValueError; types other than these pass unchanged."""
    if get_origin(annotation) is Literal:
        if isinstance(value, str) and value.strip().lower() in get_args(annotation):
            return value.strip().lower()

        raise ValueError(value)

    if get_origin(annotation) is list:
        if not isinstance(value, (str, list, tuple)):
            raise TypeError(value)

        return [_convert(get_args(annotation)[0], item) for item in split_arg(value)]

    if annotation is bool:
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)

        if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
            return value.strip().lower() in TRUE

        raise ValueError(value)

    if annotation in (int, float):
        if isinstance(value, bool):
            raise TypeError(value)

        number = float(value)
        if not math.isfinite(number) or (annotation is int and not number.is_integer()):
            raise ValueError(value)

        return value if annotation is int and isinstance(value, int) else annotation(number)

    return value


def convert(stage: str, key: str, annotation: Any, value: Any) -> Any:
    r"""`value` of key `key` as `annotation` (int, float, bool, Literal, list of them, optional); else ArgumentError.

    >>> convert("grpo", "reward_weights", list[float], "1, 0.5"), convert("grpo", "loss_type", Literal["dapo"], "DAPO")
    ([1.0, 0.5], 'dapo')
    >>> convert("grpo", "num_generations", int, "2.5")
    Traceback (most recent call last):
    ...
    llamafactory_fea.hparams.ArgumentError: grpo key `num_generations` must be an integer, got '2.5'.
    """
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        optional = len(members) < len(get_args(annotation))
        if value is None and optional:
            return None

        if len(members) != 1:  # e.g. `dict | str`: the dataclass checks it itself
            return value

        annotation = members[0]

    try:
        return _convert(annotation, value)
    except (TypeError, ValueError, OverflowError):
        expected = _expected(annotation) + (" or null" if optional else "")
        raise ArgumentError(f"{stage} key `{key}` must be {expected}, got {value!r}.") from None


def check_types(args: Any, stage: str) -> None:
    r"""Convert every field of a dataclass instance to its annotation, or raise ArgumentError naming the key."""
    hints = get_type_hints(type(args))
    for item in fields(args):
        setattr(args, item.name, convert(stage, item.name, hints[item.name], getattr(args, item.name)))


def check_bounds(
    args: Any,
    stage: str,
    at_least: dict[str, float] | None = None,
    above: dict[str, float] | None = None,
    at_most: dict[str, float] | None = None,
) -> None:
    r"""Refuse a value out of its bounds, naming the key (null passes: `check_types` refused it where not optional)."""
    checks = ((at_least, operator.ge, ">="), (above, operator.gt, ">"), (at_most, operator.le, "<="))
    for bounds, holds, sign in checks:
        for key, bound in (bounds or {}).items():
            value = getattr(args, key)
            if value is not None and not holds(value, bound):
                raise ArgumentError(f"{stage} key `{key}` must be {sign} {bound}, got {value!r}.")
