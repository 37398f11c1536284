"""Errors that name what was wrong and what was expected.

Two families. A :class:`ConfigError` is a person's mistake in what they asked for: the
config, the command line, or the files these name. ``stsun`` prints its message alone,
as one paragraph that ends the output, and exits with status 2 (see
:func:`stsun_lightning.cli.main`); so its message must say what was wrong, where (the
input, field or file) and what was expected or the closest valid choice. Everything
else is a bug and keeps its traceback; :class:`BatchValidationError` is one of those
(a datamodule that breaks the batch contract).

Which to raise:

- :class:`UnknownNameError`, built by :func:`unknown_name_error`: a name (sensor, band,
  category, task, variable, preset) that is not known. Every lookup by name goes through
  it, so the messages look the same everywhere and list the known names and the closest.
- :class:`MissingFileError`: a path, folder or glob that names no file.
- :class:`InputFileError`: a file that exists but cannot be opened or read as what it
  should be (corrupt, truncated, not a raster); build it with :func:`unreadable_file_error`
  from the library's exception.
- :class:`RasterMismatchError`: a readable raster that disagrees with its config: another
  band count, no CRS, another grid, undeclared label values, no overlap in space or time.
- :class:`ConfigError` itself: any other bad value or key in the config.

Each is also the built-in exception that callers caught before it existed: every
:class:`ConfigError` is a ``ValueError``, an :class:`UnknownNameError` a ``KeyError``, an
:class:`InputFileError` an ``OSError``, a :class:`MissingFileError` a
``FileNotFoundError``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "BatchValidationError",
    "ConfigError",
    "InputFileError",
    "MissingFileError",
    "RasterMismatchError",
    "UnknownNameError",
    "closest_name",
    "unknown_name_error",
    "unreadable_file_error",
]


class ConfigError(ValueError):
    """A person's mistake in the config, the command line or the files they name.

    ``stsun`` prints only its message (no traceback) and exits with status 2.
    """


class UnknownNameError(KeyError, ConfigError):
    """A name (sensor, band, category, task, ...) that is not known.

    Subclasses both ``KeyError`` (it is a failed lookup) and ``ValueError`` (it is bad
    input), so callers can catch either.
    """

    def __str__(self) -> str:
        # KeyError.__str__ would print the message with quotes around it.
        return str(self.args[0]) if self.args else ""


class InputFileError(ConfigError, OSError):
    """A file named by the config that cannot be opened or read (corrupt, truncated)."""


class MissingFileError(InputFileError, FileNotFoundError):
    """A path, folder or glob named by the config that matches no file."""


class RasterMismatchError(ConfigError):
    """A readable raster whose content disagrees with its config (bands, CRS, grid, ...)."""


class BatchValidationError(ValueError):
    """A batch whose fields disagree with the batch contract (a bug, not a config error)."""


def unknown_name_error(
    kind: str, name: str, known: Iterable[str], where: str = ""
) -> UnknownNameError:
    """Build the error for an unknown name, listing the known ones and the closest match.

    Args:
        kind: what the name names, e.g. ``"sensor"`` or ``"band of sensor 'sentinel2_l2a'"``.
        name: the name that was asked for.
        known: the names that exist.
        where: optional context, e.g. the file or config field the name came from.

    Returns:
        The error, to be raised by the caller.
    """
    known = sorted(known)
    close = closest_name(str(name), known)
    hint = f" Did you mean {close!r}?" if close else ""
    listing = ", ".join(known) if known else "(none)"
    location = f" (in {where})" if where else ""
    return UnknownNameError(f"Unknown {kind} {name!r}{location}.{hint} Known: {listing}.")


def closest_name(name: str, known: Iterable[str], cutoff: float = 0.5) -> str | None:
    """The known name closest to ``name``, or None if none is close.

    A name that differs only in case or in the zero padding of its numbers (``b8`` for
    ``B08``) is the closest; otherwise the most similar by ``difflib``, ties going to
    the longer common prefix (``B13`` is closer to ``B12`` than to ``B01``).
    """
    known = list(known)

    def plain(text: str) -> str:
        return re.sub(r"0+(?=\d)", "", text.lower())

    same = [k for k in known if plain(k) == plain(name)]
    if len(same) == 1:
        return same[0]

    def prefix(k: str) -> int:
        return next(
            (i for i, (a, b) in enumerate(zip(name, k, strict=False)) if a != b),
            min(len(name), len(k)),
        )

    scored = [(difflib.SequenceMatcher(None, name, k).ratio(), prefix(k), k) for k in known]
    best = max(scored, default=None)
    return best[2] if best is not None and best[0] >= cutoff else None


def unreadable_file_error(
    path: str | Path,
    error: BaseException,
    what: str = "a raster",
    input_name: str = "",
    action: str = "read",
) -> InputFileError:
    """Build the error for a file that exists but cannot be opened or read.

    Args:
        path: the file.
        error: the library's exception (e.g. ``rasterio.errors.RasterioIOError``); its
            innermost cause is quoted, since GDAL's outer message is often only "Read
            failed. See previous exception for details."
        what: what the file should be, e.g. ``"a raster"`` or ``"a checkpoint"``.
        input_name: the config input the file belongs to, if any.
        action: what failed, ``"read"`` or ``"open"``.

    Returns:
        The error, to be raised by the caller (``from None``: its message says it all).
    """
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    detail = str(root).strip() or type(root).__name__
    prefix = f"Input {input_name!r}: " if input_name else ""
    return InputFileError(
        f"{prefix}cannot {action} {path} as {what} (corrupt or truncated?): {detail}"
    )
