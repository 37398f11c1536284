"""The input specification of a user's rasters, parsed in one place."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rasterio.enums import Resampling

from stsun_lightning.data.io.files import (
    DEFAULT_DATE_PATTERN,
    resolve_sensor,
)
from stsun_lightning.data.io.stac import StacQuery
from stsun_lightning.data.sensors import Sensor
from stsun_lightning.errors import ConfigError, unknown_name_error

__all__ = ["InputSpec", "LabelSpec", "OutputKindName"]


@dataclass(frozen=True)
class InputSpec:
    """One input: a sensor, its files and how they are laid out.

    Its files are named by ``paths``, by a STAC catalog (``stac``), or both.

    Attributes:
        name: the input's name in the config.
        sensor: the sensor (its bands give the metadata).
        paths: files, folders (their ``.tif`` files) or globs.
        bands: the input's bands; with one file per date, the bands stored in each
            file, in order.
        separate_files: one file per band and date, the band's name a token of the
            file name (``..._B04_...``, ``...-B04.tif``).
        date_pattern: regex with a group ``date`` found in file names; files without
            one take their date from their tags, else are static (no date).
        scale: factor from stored values to physical ones before normalisation.
        nodata: value that means "no data" (default: the files' own nodata).
        resampling: resampling onto the grid where the file is not on it.
        stac: a STAC Item, ItemCollection or Catalog whose items are files of this
            input (config keys ``stac``, ``assets``, ``datetime``, ``bbox``; see
            :class:`~stsun_lightning.data.io.stac.StacQuery`), or None.
    """

    name: str
    sensor: Sensor
    paths: tuple[str, ...]
    bands: tuple[str, ...]
    separate_files: bool = False
    date_pattern: str = DEFAULT_DATE_PATTERN
    scale: float = 1.0
    nodata: float | None = None
    resampling: str = "bilinear"
    stac: StacQuery | None = None

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any]) -> InputSpec:
        """An input from its config mapping (``sensor``, ``paths`` and/or ``stac``, options).

        Raises:
            ConfigError: a missing or unknown key, or an option of the wrong type or value,
                naming the input and the field.
            UnknownNameError: an unknown sensor or band, with the closest match.
        """
        allowed = {f for f in cls.__dataclass_fields__ if f != "name"} | _STAC_KEYS
        _check_keys(f"Input {name!r}", spec, {"sensor"}, allowed)
        if not spec.get("paths") and not spec.get("stac"):
            raise ConfigError(
                f"Input {name!r} names no files: give 'paths' (files, folders or globs) or "
                "'stac' (a STAC Item, ItemCollection or Catalog), or both."
            )
        sensor = resolve_sensor(spec["sensor"], name)
        bands = tuple(spec.get("bands") or sensor.band_names)
        for band in bands:
            if band not in sensor.band_names:
                raise unknown_name_error(
                    f"band of sensor {sensor.name!r}", band, sensor.band_names, f"input {name!r}"
                )
        paths = spec.get("paths") or ()
        layout = {"sensor", "paths", "bands", "stac", *_STAC_KEYS}
        options = {k: v for k, v in spec.items() if k not in layout}
        _check_options(name, options)
        return cls(
            name,
            sensor,
            (paths,) if isinstance(paths, str) else tuple(paths),
            bands,
            **options,
            stac=StacQuery.parse(name, spec, sensor),
        )


_STAC_KEYS = {"assets", "datetime", "bbox"}
_RESAMPLING = tuple(r.name for r in Resampling)


def _check_options(name: str, options: Mapping[str, Any]) -> None:
    """Types and values of an input's options, with the field named in the error."""
    scale = options.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ConfigError(f"Input {name!r}: scale must be a positive number, got {scale!r}.")
    nodata = options.get("nodata")
    if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, int | float)):
        raise ConfigError(f"Input {name!r}: nodata must be a number, got {nodata!r}.")
    resampling = options.get("resampling", "bilinear")
    if resampling not in _RESAMPLING:
        raise unknown_name_error("resampling", str(resampling), _RESAMPLING, f"input {name!r}")
    pattern = options.get("date_pattern", DEFAULT_DATE_PATTERN)
    try:
        compiled = re.compile(pattern)
    except (re.error, TypeError) as error:
        raise ConfigError(
            f"Input {name!r}: date_pattern {pattern!r} is not a regex: {error}"
        ) from None
    if "date" not in compiled.groupindex:
        raise ConfigError(
            f"Input {name!r}: date_pattern {pattern!r} needs a group named 'date', e.g. "
            r"'(?P<date>\d{8})'."
        )
    if not isinstance(options.get("separate_files", False), bool):
        raise ConfigError(f"Input {name!r}: separate_files must be true or false.")


@dataclass(frozen=True)
class LabelSpec:
    """The labels: a raster of class values or of regression values.

    Attributes:
        paths: files, folders or globs.
        task: task name (a row of the task vocabulary).
        classes: class value -> category name (class labels).
        variables: variable names, one per band (value labels).
        ignore_values: values that mean "no label".
        outputs: what the labels describe: ``"state"`` at the last date, ``"change"``
            between the first and last date, ``"aggregate"`` over the series, or
            ``"per_date"`` (one band per date).
        date_pattern: regex with a group ``date``; dated labels restrict the inputs'
            frames to the labels' dates (undated labels take every frame).
    """

    paths: tuple[str, ...]
    task: str
    classes: dict[int, str] | None = None
    variables: tuple[str, ...] = ()
    ignore_values: tuple[float, ...] = ()
    outputs: str = "state"
    date_pattern: str = DEFAULT_DATE_PATTERN

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> LabelSpec:
        """Labels from their config mapping.

        Raises:
            ConfigError: a missing or unknown key, or neither/both of classes and variables.
        """
        _check_keys("labels", spec, {"paths", "task"}, set(cls.__dataclass_fields__))
        classes = spec.get("classes")
        variables = tuple(spec.get("variables") or ())
        if bool(classes) == bool(variables):
            raise ConfigError(
                "labels need either 'classes' ({value: category name}) or 'variables' "
                f"([names] of regression values), got keys {sorted(spec)}."
            )
        outputs = spec.get("outputs", "state")
        if outputs not in ("state", "change", "aggregate", "per_date"):
            raise ConfigError(
                f"labels.outputs must be state, change, aggregate or per_date, got {outputs!r}."
            )
        paths = spec["paths"]
        return cls(
            (paths,) if isinstance(paths, str) else tuple(paths),
            spec["task"],
            {int(k): str(v) for k, v in classes.items()} if classes else None,
            variables,
            tuple(float(v) for v in spec.get("ignore_values", ())),
            outputs,
            spec.get("date_pattern", DEFAULT_DATE_PATTERN),
        )


def _check_keys(what: str, spec: Mapping[str, Any], required: set[str], allowed: set[str]) -> None:
    missing, unknown = required - set(spec), set(spec) - allowed
    if missing or unknown:
        problem = f"misses {sorted(missing)}" if missing else f"has unknown keys {sorted(unknown)}"
        raise ConfigError(f"{what} {problem}; expected keys: {sorted(allowed)}.")


OutputKindName = Literal["state", "change", "aggregate", "per_date"]
