"""What the frozen config dataclasses of ``local/`` and ``identify/`` share: their JSON form.

Each stage keeps its tunables in one frozen dataclass next to the code that
uses them (``FeatureConfig``, ``VoteConfig``, ``VerifyConfig``,
``CandidateConfig``); an index writes them whole into its manifest, so it keeps
answering the same way after pinid's defaults change. A manifest is input:
unknown names, wrong types and out-of-range values are ``IndexFormatError``,
while missing names take today's defaults and retired ones are dropped
(older manifests keep working).
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from typing import Any, ClassVar, TypeVar

from ..errors import IndexFormatError

C = TypeVar("C", bound="Config")


class Config:
    """Mixin for a frozen dataclass of numbers (and tuples of numbers): ``to_dict`` and ``from_dict``.

    Subclasses check their values in ``__post_init__`` (``ValueError``); the
    type of each field is that of its default. Names in ``RETIRED`` were
    settings once: older manifests still carry them, so they are read and dropped.
    """

    RETIRED: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """Every field by name; tuples become lists (plain JSON)."""
        names = [field.name for field in dataclasses.fields(self)]  # type: ignore[arg-type]
        return {name: _plain(getattr(self, name)) for name in names}

    @classmethod
    def from_dict(cls: type[C], data: Any, where: str = "") -> C:
        """The config a manifest section describes; missing names take the defaults."""
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise IndexFormatError(f"{where} is not a JSON object")
        fields = {field.name: field for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
        data = {name: value for name, value in data.items() if name not in cls.RETIRED}
        unknown = [name for name in data if name not in fields]
        if unknown:
            raise IndexFormatError(f"{where}: unknown setting(s) {unknown_names(unknown)} (made by another pinid?)")
        values = {name: _typed(value, fields[name].default, f"{where}.{name}") for name, value in data.items()}
        try:
            return cls(**values)
        except ValueError as exc:
            raise IndexFormatError(f"{where}: {exc}") from None


def unknown_names(names: list[Any]) -> str:
    """A few of ``names`` for an error line: quoted, control characters escaped, long lists cut short."""
    shown = ", ".join(reprlib.repr(str(name)) for name in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _typed(value: Any, default: Any, where: str) -> Any:
    """``value`` as the type of ``default`` (int, float, or a non-empty tuple of either)."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not value:
            raise IndexFormatError(f"{where} must be a non-empty list, not {reprlib.repr(value)}")
        return tuple(_typed(item, default[0], where) for item in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise IndexFormatError(f"{where} must be a number, not {reprlib.repr(value)}")
    if isinstance(default, int):
        if not isinstance(value, int):
            raise IndexFormatError(f"{where} must be a whole number, not {reprlib.repr(value)}")
        return value
    if not math.isfinite(value):
        raise IndexFormatError(f"{where} must be finite, not {reprlib.repr(value)}")
    return float(value)


def check(condition: bool, message: str) -> None:
    """For ``__post_init__``: a config value out of range is a ``ValueError`` naming it."""
    if not condition:
        raise ValueError(message)


__all__ = ["Config", "check", "unknown_names"]
