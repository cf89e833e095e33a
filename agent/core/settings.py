"""Value rules for settings dataclasses: what a field accepts, attached to the field itself.

A package that owns a settings table (``[lan]``, ``[mqtt]``, ...) declares its
frozen dataclass with :func:`rule` fields; :mod:`agent.config` reads the rule
back with :func:`rule_of` when it validates a file. This module is pure (no
I/O) and imports nothing from ``agent``, so every package may use it without
depending on the configuration loader.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

__all__ = ["Rule", "positive", "rule", "rule_of"]

_T = TypeVar("_T")
_KEY: Final = "agent.core.settings.rule"


@dataclass(frozen=True, slots=True)
class Rule:
    """Which values a field accepts: ``valid(value)`` is true for them, ``expected`` describes them."""

    expected: str
    valid: Callable[[Any], bool]


def rule(default: _T, expected: str, valid: Callable[[Any], bool]) -> _T:
    """A dataclass field defaulting to ``default`` whose values must also satisfy ``valid``.

    ``expected`` completes the error message "expected <expected>, got <value>".
    """
    return dataclasses.field(default=default, metadata={_KEY: Rule(expected, valid)})


def positive(default: _T) -> _T:
    """A number field that must be > 0."""
    return rule(default, "a number > 0", lambda v: v > 0)


def rule_of(field: dataclasses.Field[Any]) -> Rule | None:
    """The rule attached to ``field`` by :func:`rule`, or None if any value of its type is accepted."""
    found = field.metadata.get(_KEY)
    return found if isinstance(found, Rule) else None
