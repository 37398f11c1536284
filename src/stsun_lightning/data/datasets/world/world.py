"""SpectralWorld: a physically grounded synthetic multi-sensor world written as GeoTIFFs.

Every source of :data:`~stsun_lightning.data.datasets.world.sources.SOURCES` gets
``scenes_per_source`` scenes at distinct places in UTM zone 32N (EPSG:32632). A scene is a
landscape drawn in metres (:mod:`~stsun_lightning.data.datasets.world.layout`), rendered per date
through each sensor's real bands (:mod:`~stsun_lightning.data.datasets.world.render`), and written
as ``root/<source>/<scene>/<input>_<YYYY-MM-DD>.tif`` plus ``label.tif``; ``root/manifest.json``
lists everything (see :meth:`SpectralWorld.generate`).

Products:

* optical: uint16 reflectance x 10000 (thermal bands kelvin x 100), nodata 0, no offset;
* SAR: float32 sigma0 in dB with 4-look speckle, nodata NaN;
* labels: uint8 classes with nodata 0 (tag ``CLASSES="1:name,2:name"``), or float32
  values with nodata NaN (canopy height in metres).

Everything is drawn from ``numpy`` generators seeded by (seed, source, scene), so a seed
gives byte-identical files. Generation is atomic: sources are written to a temporary
folder in ``root``, moved into place whole, and the manifest is written last.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.transform import from_origin

from stsun_lightning.data.datasets.world.changes import apply_changes
from stsun_lightning.data.datasets.world.files import (
    CRS,
    band_tags,
    quantise_reflectance,
    write_geotiff,
)
from stsun_lightning.data.datasets.world.layout import Layout, generate_layout
from stsun_lightning.data.datasets.world.render import (
    Sky,
    SurfaceState,
    draw_sky,
    is_sar,
    majority,
    pool,
    render_optical,
    render_sar,
    surface_state,
)
from stsun_lightning.data.datasets.world.sources import (
    SOURCES,
    WorldSource,
    coarse_classes,
    crop_classes,
    fine_classes,
)
from stsun_lightning.errors import unknown_name_error

try:  # POSIX only; elsewhere concurrent generations are not serialised.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["CRS", "SOURCES", "VERSION", "SpectralWorld"]

VERSION = 2
"""Version of the world's content; a cache with another version is regenerated."""
_SUPERSAMPLING = 2  # fine pixels per sensor pixel along each axis: mixed pixels at edges
_SCENES_PER_ROW = 16
_LOG = logging.getLogger(__name__)


def _scene_origin(
    source_index: int, scene_index: int, scenes_per_source: int, scene_size: int
) -> tuple[float, float]:
    """Upper-left corner (easting, northing) in metres: one grid cell per scene, far apart."""
    widest = scene_size * max(s.gsd_m for s in SOURCES.values())
    spacing = max(30_000.0, 2.0 * widest)
    index = source_index * scenes_per_source + scene_index
    row, col = divmod(index, _SCENES_PER_ROW)
    return 200_000.0 + col * spacing, 5_600_000.0 - row * spacing


def _rng(seed: int, source: str, scene: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(source.encode()), scene]))


def _swath_edge(rng: np.random.Generator, size: int, chance: float) -> np.ndarray:
    """(H, W) bool, True where the orbit's swath misses the scene (a straight-edged corner)."""
    draw = rng.random(3)
    if draw[0] >= chance:
        return np.zeros((size, size), dtype=bool)
    angle = 2 * math.pi * draw[1]
    coords = (np.arange(size) + 0.5) / size - 0.5
    across = coords[None, :] * math.cos(angle) + coords[:, None] * math.sin(angle)
    return across > 0.45 - 0.3 * draw[2]  # misses 5-35 % of the scene


class SpectralWorld:
    """The synthetic world on disk under ``root``.

    Args:
        root: folder that holds ``manifest.json`` and one folder per source.
        seed: seed of every random draw.
        scene_size: scene width and height in pixels (every source, at its own GSD).
        scenes_per_source: scenes per source; the last ``val_scenes`` are ``"val"``, the
            others ``"train"``.
        sources: names of the sources to generate, default all of :data:`SOURCES`.
        val_scenes: held-out scenes per source (scores on one 256² scene move by up to
            0.1 mIoU between runs; more scenes average that out).

    Raises:
        ValueError: for sizes below 8 pixels, fewer than 1 scene, or a ``val_scenes``
            that leaves no training scene.
        UnknownNameError: for unknown source names.
    """

    def __init__(
        self,
        root: str | Path,
        seed: int = 0,
        scene_size: int = 256,
        scenes_per_source: int = 4,
        sources: Sequence[str] | None = None,
        val_scenes: int = 1,
    ) -> None:
        if scene_size < 8:
            raise ValueError(f"scene_size: expected at least 8 pixels, got {scene_size}")
        if scenes_per_source < 1:
            raise ValueError(f"scenes_per_source: expected at least 1, got {scenes_per_source}")
        if not 0 <= val_scenes < max(scenes_per_source, 2):
            raise ValueError(
                f"val_scenes: expected 0 to scenes_per_source - 1 = {scenes_per_source - 1} "
                f"(at least one training scene), got {val_scenes}"
            )
        names = list(SOURCES) if sources is None else list(dict.fromkeys(sources))
        for name in names:
            if name not in SOURCES:
                raise unknown_name_error("world source", name, SOURCES)
        self.root = Path(root)
        self.seed = int(seed)
        self.scene_size = int(scene_size)
        self.scenes_per_source = int(scenes_per_source)
        self.val_scenes = int(val_scenes)
        self.sources = [n for n in SOURCES if n in names]  # registry order: stable manifests

    @property
    def manifest_path(self) -> Path:
        """``root/manifest.json``."""
        return self.root / "manifest.json"

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest of the cache, generating the world first if missing or stale."""
        return self._read_complete() or self.generate()

    def _config(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "seed": self.seed,
            "scene_size": self.scene_size,
            "scenes_per_source": self.scenes_per_source,
            "val_scenes": self.val_scenes,
            "crs": CRS,
        }

    def _read_complete(self) -> dict[str, Any] | None:
        """The manifest if it matches this configuration and all its files exist."""
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or any(
            manifest.get(k) != v for k, v in self._config().items()
        ):
            return None
        if list(manifest.get("sources", {})) != self.sources:
            return None
        for source in manifest["sources"].values():
            for scene in source["scenes"]:
                paths = [scene["label"], *(p for ps in scene["files"].values() for p in ps)]
                if not all((self.root / p).is_file() for p in paths):
                    return None
        return manifest

    def is_complete(self) -> bool:
        """Whether ``root`` holds a complete world for this configuration."""
        return self._read_complete() is not None

    def generate(self, force: bool = False) -> dict[str, Any]:
        """Generate the world unless a complete cache exists; return the manifest.

        The manifest (``root/manifest.json``) reads::

            {"version", "seed", "scene_size", "scenes_per_source", "val_scenes", "crs",
             "sources": {name: {"task", "outputs", "label", "inputs", "scenes"}}}

        with ``label`` ``{"kind": "classes", "classes": {"1": name}, "ignore_values": [0]}``
        or ``{"kind": "values", "variables": [...], "unit": "m"}``, ``inputs``
        ``{input: {"sensor", "bands"}}`` and each scene ``{"name", "split", "gsd_m",
        "dates", "files": {input: [path per date]}, "label"}``, paths relative to ``root``.

        Args:
            force: regenerate even if a complete cache exists.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if not force and (manifest := self._read_complete()) is not None:
                return manifest
            self._remove_leftovers()
            start = time.perf_counter()
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
            try:
                manifest = {**self._config(), "sources": {}}
                for name in self.sources:
                    manifest["sources"][name] = self._generate_source(tmp, SOURCES[name])
                text = json.dumps(manifest, indent=2) + "\n"
                (tmp / "manifest.json").write_text(text, encoding="utf-8")
                self._install(tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            _LOG.info(
                "Generated %d sources under %s in %.1f s",
                len(self.sources),
                self.root,
                time.perf_counter() - start,
            )
            return manifest

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise generations of the same root across processes."""
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_leftovers(self) -> None:
        """Delete temporary folders of killed runs (safe: we hold the lock)."""
        for path in self.root.glob(".tmp-*"):
            shutil.rmtree(path, ignore_errors=True)

    def _install(self, tmp: Path) -> None:
        """Move the sources into place one by one, then the manifest.

        The old manifest goes first, so an interrupted install never looks complete.
        """
        self.manifest_path.unlink(missing_ok=True)
        trash = tmp / ".replaced"
        trash.mkdir()
        for name in self.sources:
            final = self.root / name
            if final.exists():
                os.replace(final, trash / name)
            os.replace(tmp / name, final)
        os.replace(tmp / "manifest.json", self.manifest_path)

    def _generate_source(self, tmp: Path, source: WorldSource) -> dict[str, Any]:
        scenes = [
            self._generate_scene(tmp, source, index) for index in range(self.scenes_per_source)
        ]
        if source.label == "height":
            label: dict[str, Any] = {"kind": "values", "variables": ["canopy_height"], "unit": "m"}
        else:
            classes = {str(i): name for i, name in enumerate(source.classes, start=1)}
            label = {"kind": "classes", "classes": classes, "ignore_values": [0]}
        return {
            "task": source.task,
            "outputs": source.outputs,
            "label": label,
            "inputs": {
                inp.name: {"sensor": inp.sensor, "bands": [b.name for b in inp.bands]}
                for inp in source.inputs
            },
            "scenes": scenes,
        }

    def _generate_scene(self, tmp: Path, source: WorldSource, index: int) -> dict[str, Any]:
        name = f"scene_{index:03d}"
        folder = tmp / source.name / name
        folder.mkdir(parents=True)
        rng = _rng(self.seed, source.name, index)
        size, gsd = self.scene_size, source.gsd_m
        origin = _scene_origin(
            list(SOURCES).index(source.name), index, self.scenes_per_source, size
        )
        transform = from_origin(*origin, gsd, gsd)
        dates = source.dates(rng)
        layout = generate_layout(rng, size * _SUPERSAMPLING, gsd / _SUPERSAMPLING, source.layout)
        layouts, changed = [layout] * len(dates), None
        if source.label == "change":
            after, changed = apply_changes(rng, layout)
            layouts = [layout, after]

        files: dict[str, list[str]] = {inp.name: [] for inp in source.inputs}
        thick_clouds = np.zeros((size, size), dtype=bool)
        for date, scene_layout in zip(dates, layouts, strict=True):
            state, sky, paths = _write_date(folder, source, scene_layout, date, transform, rng)
            thick_clouds |= sky.cloud > 0.5
            for input_name, path in paths.items():
                files[input_name].append(path.relative_to(tmp).as_posix())

        label = _label(source, layouts[-1], state, sky, changed)
        if source.mask_clouds and label.dtype == np.uint8:
            label[thick_clouds] = 0
        label_path = _write_label(folder / "label.tif", source, name, label, transform)
        return {
            "name": name,
            "split": "val" if index >= self.scenes_per_source - self.val_scenes else "train",
            "gsd_m": gsd,
            "dates": [d.isoformat() for d in dates],
            "files": files,
            "label": label_path.relative_to(tmp).as_posix(),
        }


def _thermal_offset_k(doy: int) -> float:
    """Seasonal shift of surface temperatures (spectra hold late-July values), 0 to -12 K."""
    return -6.0 * (1 - math.cos(2 * math.pi * (doy - 200) / 365))


def _write_date(
    folder: Path,
    source: WorldSource,
    layout: Layout,
    date: dt.date,
    transform: Any,
    rng: np.random.Generator,
) -> tuple[SurfaceState, Sky, dict[str, Path]]:
    """Render and write every input of one acquisition date.

    Returns:
        The surface and sky of the date, and the path written per input.
    """
    size = layout.cover.shape[0] // _SUPERSAMPLING
    doy = date.timetuple().tm_yday
    state = surface_state(layout, doy, _SUPERSAMPLING)
    clear = rng.random() < source.clear_chance
    cover = 0.0 if clear else rng.uniform(*source.cloud_cover)
    cirrus = source.cirrus * rng.uniform(0.3, 1.0) if rng.random() < 0.5 else 0.0
    sky = draw_sky(rng, size, source.gsd_m, cover, cirrus)
    missing = _swath_edge(rng, size, source.swath_edge_chance)
    paths = {}
    for inp in source.inputs:
        bands = inp.bands
        if all(is_sar(b) for b in bands):
            data, nodata = render_sar(state, bands, rng), math.nan
        else:
            reflectance = render_optical(
                state, bands, rng, sky, inp.top_of_atmosphere, _thermal_offset_k(doy)
            )
            data, nodata = quantise_reflectance(reflectance, missing), 0
        tags = {
            "ACQUISITION_DATE": date.isoformat(),
            "SENSOR": inp.sensor,
            "SOURCE": source.name,
            "SCENE": folder.name,
        }
        paths[inp.name] = folder / f"{inp.name}_{date.isoformat()}.tif"
        names = [b.name for b in bands]
        write_geotiff(paths[inp.name], data, transform, nodata, names, tags, band_tags(inp))
    return state, sky, paths


def _label(
    source: WorldSource,
    layout: Layout,
    state: SurfaceState,
    sky: Sky,
    changed: np.ndarray | None,
) -> np.ndarray:
    """The label on the sensor grid from the last date: (H, W) uint8 classes or float32 m."""
    if source.label == "height":
        return state.height_m.astype(np.float32)
    if source.label == "cloud":
        cloudy = (sky.cloud > 0.25) | (sky.cirrus > 0.1)
        return np.where(cloudy, 2, 1).astype(np.uint8)
    if source.label == "change" and changed is not None:
        share = pool(changed.astype(np.float32), _SUPERSAMPLING)
        # Pixels half changed are ambiguous: ignored rather than forced into a class.
        return np.select([share >= 0.5, share <= 0.25], [2, 1], 0).astype(np.uint8)
    fine_map = {"crops": crop_classes, "coarse": coarse_classes, "fine": fine_classes}
    classes, _ = majority(fine_map[source.label](layout), len(source.classes) + 1, _SUPERSAMPLING)
    return classes


def _write_label(
    path: Path, source: WorldSource, scene: str, label: np.ndarray, transform: Any
) -> Path:
    """Write the label GeoTIFF with its class (or variable) tags; returns ``path``."""
    tags = {"SOURCE": source.name, "SCENE": scene}
    if source.label == "height":
        tags.update(VARIABLES="canopy_height", UNIT="m")
        description, nodata = "canopy_height", math.nan
    else:
        tags["CLASSES"] = ",".join(f"{i}:{c}" for i, c in enumerate(source.classes, start=1))
        description, nodata = "label", 0
    write_geotiff(path, label[None], transform, nodata, [description], tags)
    return path
