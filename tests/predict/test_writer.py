"""OutputRaster at sizes and band counts where GDAL's COG driver breaks or slows down."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from stsun_lightning.palette import colour_table
from stsun_lightning.predict.layers import Layer
from stsun_lightning.predict.outputs import chunk_columns
from stsun_lightning.predict.writer import OutputRaster, overview_factors

GRID = {"crs": "EPSG:32633", "transform": from_origin(600_000, 5_500_000, 10, 10)}


def _write(path: Path, layer: Layer, data: np.ndarray, rows: int = 192) -> Path:
    """Write (count, H, W) in row bands, as SceneOutputs does, and publish the COG."""
    _, height, width = data.shape
    raster = OutputRaster(layer, {**GRID, "height": height, "width": width})
    for top in range(0, height, rows):
        raster.write_rows(top, data[:, top : top + rows])
    return raster.close()


def _check_cog(path: Path, height: int, width: int) -> None:
    valid, errors, _ = cog_validate(str(path), strict=True)
    assert valid and not errors, errors
    with rasterio.open(path) as dst:
        assert dst.shape == (height, width)
        assert dst.overviews(1) == overview_factors(height, width) != []
        assert dst.profile["blockxsize"] == 512 and dst.profile["tiled"]


def _unit_values(count: int, height: int, width: int) -> np.ndarray:
    """Smooth class probabilities summing to one over the bands."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    logits = np.stack([np.sin(x / (40 + 7 * k)) + np.cos(y / (30 + 5 * k)) for k in range(count)])
    e = np.exp(3 * logits)
    return e / e.sum(0)


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_probabilities_of_a_raster_over_512_px_are_a_cog_with_correct_overviews(tmp_path, dtype):
    height, width, count = 1100, 1500, 3
    values = _unit_values(count, height, width)
    stored = (
        values.astype(np.float16) if dtype == "float16" else np.rint(values * 254).astype(np.uint8)
    )
    nodata = float("nan") if dtype == "float16" else 255
    layer = Layer(
        tmp_path / "p.tif", dtype, nodata, ("a", "b", "c"), {"TASK": "t"}, resampling="average"
    )
    _check_cog(_write(tmp_path / "p.tif", layer, stored), height, width)
    with rasterio.open(tmp_path / "p.tif") as dst:
        assert dst.dtypes == (dtype,) * count and dst.tags()["TASK"] == "t"
        np.testing.assert_array_equal(dst.read(), stored)
        # The average overview of probabilities still sums to one.
        coarse = dst.read(out_shape=(count, height // 4, width // 4)).astype(np.float64)
    scale = 1.0 if dtype == "float16" else 1 / 254
    np.testing.assert_allclose(
        coarse.sum(0) * scale, 1.0, atol=3e-3 if dtype == "float16" else 0.02
    )


def test_a_uint16_class_map_over_512_px_keeps_its_colour_table(tmp_path):
    height, width, names = 700, 1300, [f"class_{i}" for i in range(300)]
    classes = (np.arange(height * width) % 300).reshape(1, height, width).astype(np.uint16)
    classes[0, :5] = 65535
    table = colour_table(["water", *names[1:]], nodata=65535)
    layer = Layer(tmp_path / "c.tif", "uint16", 65535, ("state",), {}, colormap=table)
    _check_cog(_write(tmp_path / "c.tif", layer, classes), height, width)
    with rasterio.open(tmp_path / "c.tif") as dst:
        assert dst.dtypes == ("uint16",) and dst.nodata == 65535
        colours = dst.colormap(1)
        np.testing.assert_array_equal(dst.read(), classes)
    assert colours[0] == table[0] and colours[299] == table[299] and colours[65535][3] == 0


@pytest.mark.slow
def test_many_bands_of_float16_make_a_valid_cog(tmp_path):
    # A per-date map of 8 dates × 16 classes: 128 bands.
    height, width, count = 600, 700, 128
    stored = _unit_values(count, height, width).astype(np.float16)
    names = tuple(f"band_{i}" for i in range(count))
    layer = Layer(tmp_path / "m.tif", "float16", float("nan"), names, {}, resampling="average")
    _check_cog(_write(tmp_path / "m.tif", layer, stored), height, width)
    with rasterio.open(tmp_path / "m.tif") as dst:
        assert dst.count == count and dst.descriptions == names
        np.testing.assert_array_equal(dst.read(count), stored[-1])


def test_column_chunks_hold_about_8_mib_whatever_the_number_of_bands():
    assert chunk_columns(4, 192, 1500) == 1500  # few bands: the whole row band at once
    for channels in (64, 1024, 4096):
        columns = chunk_columns(channels, 192, 20_000)
        assert columns % 256 == 0 and columns >= 256
        assert columns == 256 or channels * 192 * columns * 4 <= 8 * 2**20
