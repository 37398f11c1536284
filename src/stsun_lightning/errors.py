"""Errors that name what was wrong and what was expected.

Every user-facing lookup by name (sensor, band, category, task, variable) goes through
:func:`unknown_name_error`, so the messages look the same everywhere and always list
what exists and the closest match.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["BatchValidationError", "ConfigError", "UnknownNameError", "unknown_name_error"]


class ConfigError(ValueError):
    """A mistake in a configuration or in the files it names, meant for its author.

    The message says what was wrong, where (file, field) and what was expected.
    """


class UnknownNameError(KeyError, ValueError):
    """A name (sensor, band, category, task, ...) that is not known.

    Subclasses both ``KeyError`` (it is a failed lookup) and ``ValueError`` (it is bad
    input), so callers can catch either.
    """

    def __str__(self) -> str:
        # KeyError.__str__ would print the message with quotes around it.
        return str(self.args[0]) if self.args else ""


class BatchValidationError(ValueError):
    """A batch whose fields disagree with the batch contract."""


def unknown_name_error(
    kind: str, name: str, known: Iterable[str], where: str = ""
) -> UnknownNameError:
    """Build the error for an unknown name, listing the known ones and the closest match.

    Args:
        kind: what the name names, e.g. ``"sensor"`` or ``"band of sensor 'sentinel2_l2a'"``.
        name: the name that was asked for.
        known: the names that exist.
        where: optional context, e.g. the file the name came from.

    Returns:
        The error, to be raised by the caller.
    """
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(known) if known else "(none)"
    location = f" (in {where})" if where else ""
    return UnknownNameError(f"Unknown {kind} {name!r}{location}.{hint} Known: {listing}.")
