"""The base of every stage's settings: a frozen pydantic model, validated once, with user-facing errors.

A field's docstring (the string literal under it) is its description: the command line shows it as
the option's help (:mod:`instlib.cli`), the book and ``--show`` list it. Invalid values raise
:class:`~instlib.errors.ArgumentError` naming the field, never a pydantic traceback.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from instlib.errors import ArgumentError


class SettingsError(ArgumentError):
    """Invalid settings; ``problems`` holds ``(field or None, problem)`` per invalid field."""

    def __init__(self, exc: ValidationError, owner: str):
        self.problems = [(".".join(map(str, e["loc"])) or None, _problem(e)) for e in exc.errors()]
        super().__init__("; ".join(f"{field or owner}: {problem}" for field, problem in self.problems))


class Config(BaseModel):
    """Settings of one stage. Frozen: derive changed copies with :meth:`updated`."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True,
                              coerce_numbers_to_str=True)  # a folder named 2024 given without quotes

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(exc, type(self).__name__) from None

    def updated(self, **changes: Any) -> Config:
        """A validated copy with ``changes`` applied (``None`` values keep the current value)."""
        return type(self)(**{**self.model_dump(), **{k: v for k, v in changes.items() if v is not None}})

    def dump(self) -> dict[str, Any]:
        """The settings as plain JSON-like data (tuples become lists)."""
        return self.model_dump(mode="json")


def _problem(err: dict) -> str:
    """A pydantic error in words, with the value given when the message does not say it."""
    msg = err["msg"].removeprefix("Value error, ")
    return msg if err["type"] in ("value_error", "missing") or "input" not in err else f"{msg} (got {err['input']!r})"


AUTO = "auto"


def positive_or_auto(value: Any, what: str) -> Any:
    """``value`` as a number of pixels > 0, or ``"auto"`` (measured on the images), else a clear error."""
    if value == AUTO:
        return value
    try:
        if float(value) > 0:
            return float(value)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{what} must be a number of pixels > 0 or '{AUTO}', got {value!r}")


def one_of(value: Any, choices: Collection[str], what: str) -> Any:
    """``value`` if it is one of ``choices``, else a clear error (for fields chosen by name from a registry)."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value
