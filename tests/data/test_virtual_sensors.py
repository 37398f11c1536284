"""Virtual sensors: drawn per item from (seed, epoch, index), rendered like the world's sensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from stsun_lightning.batch import collate_batches
from stsun_lightning.data.datamodules.world import SpectralWorldDataModule
from stsun_lightning.data.datasets.virtual_patches import VirtualSensorPatchDataset, pad_item
from stsun_lightning.data.datasets.world.surfaces import (
    area_matrix,
    render_surface,
    resample_area,
    resample_classes,
)
from stsun_lightning.data.datasets.world.virtual import (
    VirtualSensors,
    draw_virtual_sensor,
    jitter_bands,
    reflectance_statistics,
)
from stsun_lightning.data.datasets.world.world import SpectralWorld
from stsun_lightning.data.samplers.epochs import EpochIndex
from stsun_lightning.data.sensors import get_sensor
from stsun_lightning.errors import ConfigError

SIZE, PATCH = 32, 16
CONFIG = VirtualSensors(probability=1.0, gsd_factor=(1.0, 2.0))


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    root = tmp_path_factory.mktemp("virtual_world")
    return SpectralWorldDataModule(
        root=str(root),
        seed=3,
        scene_size=SIZE,
        scenes_per_source=2,
        source_names=["s2_change", "aerial_landcover", "s1s2_landcover"],
        patch_size=PATCH,
        batch_size=4,
        samples_per_scene=8,
        virtual_sensors=CONFIG,
    )


def _train(datamodule, source: str) -> VirtualSensorPatchDataset:
    names = [s.name for s in datamodule.source_infos]
    dataset = datamodule.datasets("train")[names.index(source)]
    assert isinstance(dataset, VirtualSensorPatchDataset)
    return dataset


def test_draws_respect_physical_ranges():
    config = VirtualSensors()
    counts, gsds = set(), []
    for i in range(300):
        sensor = draw_virtual_sensor(np.random.default_rng(i), config, 10.0, 64)
        counts.add(len(sensor.bands))
        centres = [b.wavelength_nm for b in sensor.bands]
        assert centres == sorted(centres)
        for band in sensor.bands:
            assert 400 <= band.wavelength_nm <= 2400
            assert not 1350 < band.wavelength_nm < 1450
            assert not 1800 < band.wavelength_nm < 1950
            assert 10 <= band.bandwidth_nm <= 200
            assert band.gsd_m == sensor.gsd_m
        assert 10.0 <= sensor.gsd_m <= 20.0 + 1e-9
        assert sensor.gsd_m * sensor.size == pytest.approx(640.0)  # same ground covered
        gsds.append(sensor.gsd_m)
    assert counts == set(range(3, 14))
    assert min(gsds) == 10.0 and max(gsds) == pytest.approx(20.0)


def test_bad_ranges_are_refused_with_the_field():
    with pytest.raises(ValueError, match="max_bands"):
        VirtualSensors(min_bands=5, max_bands=4)
    with pytest.raises(ValueError, match="gsd_factor"):
        VirtualSensors(gsd_factor=(0.5, 2.0))
    with pytest.raises(ValueError, match="no wavelength"):
        VirtualSensors(wavelength_nm=(1360.0, 1440.0))


def test_jitter_moves_centres_and_widths_slightly():
    bands = get_sensor("landsat8_oli_tirs").bands
    moved = jitter_bands(bands, np.random.default_rng(0), 5.0, 0.1)
    for before, after in zip(bands, moved, strict=True):
        if before.wavelength_nm > 3000:  # thermal: no response to move
            assert after == before
            continue
        assert 0 < abs(after.wavelength_nm - before.wavelength_nm) < 25
        assert 0.6 < after.bandwidth_nm / before.bandwidth_nm < 1.6
    assert jitter_bands(bands, np.random.default_rng(0), 0.0, 0.0) == bands


def test_area_resampling_keeps_the_mean_and_is_identity_at_the_same_size():
    rows = area_matrix(16, 11)
    np.testing.assert_allclose(rows.sum(1), 1.0)
    array = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    assert resample_area(array, 16) is array
    np.testing.assert_allclose(resample_area(array, 11).mean((1, 2)), array.mean((1, 2)), 1e-5)
    classes = np.zeros((16, 16), np.int64)
    classes[:, 10:] = 1
    classes[:2] = -1
    coarse = resample_classes(classes, 8, 2)
    assert coarse[1:, :5].max() == 0 and coarse[1:, 5:].min() == 1 and (coarse[0] == -1).all()


def test_surface_rendering_of_a_real_sensor_is_its_file_bit_for_bit(datamodule):
    manifest = datamodule.manifest
    for source, sensor, toa in (("s2_change", "sentinel2_l2a", False),):
        for scene in manifest["sources"][source]["scenes"]:
            for surface_path, file_path in zip(
                scene["surfaces"], scene["files"]["s2"], strict=True
            ):
                with rasterio.open(datamodule.root / surface_path) as src:
                    surface, tags = src.read(), src.tags()
                with rasterio.open(datamodule.root / file_path) as src:
                    stored = src.read()
                rng = np.random.default_rng()
                rng.bit_generator.state = json.loads(tags["RNG_STATE_S2"])
                bands = get_sensor(sensor).bands
                rendered = render_surface(surface[None], bands, rng, None, toa)[0]
                assert np.array_equal(np.nan_to_num(rendered, nan=0.0).astype(np.uint16), stored)


def test_items_depend_on_seed_epoch_and_index_only(datamodule, tmp_path):
    dataset = _train(datamodule, "s2_change")
    first = dataset[EpochIndex(0, 3)]
    again = dataset[EpochIndex(0, 3)]
    later = dataset[EpochIndex(1, 3)]
    assert torch.equal(first.image.nan_to_num(-9), again.image.nan_to_num(-9))
    assert torch.equal(first.wavelength_nm, again.wavelength_nm)
    wavelengths = {tuple(dataset[EpochIndex(e, 3)].wavelength_nm[0].tolist()) for e in range(4)}
    assert len(wavelengths) == 4  # another sensor every epoch
    assert not torch.equal(first.wavelength_nm, later.wavelength_nm)
    fresh = SpectralWorldDataModule(**datamodule.hparams)
    assert torch.equal(
        _train(fresh, "s2_change")[EpochIndex(0, 3)].image.nan_to_num(-9),
        first.image.nan_to_num(-9),
    )


def test_batch_metadata_matches_what_was_rendered(datamodule):
    dataset = _train(datamodule, "s2_change")
    for index in range(len(dataset)):
        item = dataset[EpochIndex(2, index)]
        real = item.band_mask[0].any(0)  # (C,)
        count = int(real.sum())
        assert 3 <= count <= 13 and bool(real[:count].all()) and not bool(real[count:].any())
        wavelength = item.wavelength_nm[0, :count]
        assert bool((wavelength >= 400).all() and (wavelength <= 2400).all())
        assert bool((item.bandwidth_nm[0, :count] >= 10).all())
        assert bool((item.modality[0, :count] == 0).all())
        size = round(PATCH * 10.0 / float(item.gsd_m))
        assert 10.0 <= float(item.gsd_m) <= 20.0 + 1e-6
        valid = item.valid_mask[0]
        assert not bool(valid[size:].any() or valid[:, size:].any())  # padding is not valid
        assert bool((item.target[0, :, size:] == -1).all())
        image = item.image[0][:, :count][:, :, valid]
        # Normalised with the fixed reflectance scale: reflectance 0-1 -> -1.33 to 5.33.
        finite = image[torch.isfinite(image)]
        assert finite.numel() and float(finite.min()) > -1.34 and float(finite.max()) < 5.34


def test_rendered_item_equals_the_surface_rendered_with_the_declared_bands(datamodule):
    dataset = _train(datamodule, "aerial_landcover")
    item = dataset[EpochIndex(0, 1)]
    rng = np.random.default_rng((3, 17, 0, 1))
    assert rng.random() < 1.0  # the draw that chose a virtual sensor
    sensor = draw_virtual_sensor(rng, CONFIG, 1.0, PATCH)
    count = len(sensor.bands)
    assert item.wavelength_nm[0, :count].tolist() == pytest.approx(
        [b.wavelength_nm for b in sensor.bands]
    )
    assert float(item.gsd_m) == pytest.approx(sensor.gsd_m)
    statistics = reflectance_statistics(sensor.bands)
    assert set(statistics.mean) == {0.2}


def test_band_count_and_gsd_variation_collate_through_the_loader(datamodule):
    loader = datamodule.train_dataloader()
    batch = next(iter(loader))
    assert batch.image.shape[2:] == (13, PATCH, PATCH)
    assert batch.band_mask.any(1).sum(1).unique().numel() > 1 or batch.gsd_m.unique().numel() > 1
    batch.validate()
    items = [_train(datamodule, "s2_change")[EpochIndex(0, i)] for i in range(4)]
    assert collate_batches(items).image.shape[0] == 4


def test_validation_reads_the_real_sensor_with_fixed_statistics(datamodule):
    names = [s.name for s in datamodule.source_infos]
    val = datamodule.datasets("val")[names.index("s2_change")]
    assert not isinstance(val, VirtualSensorPatchDataset)
    record = datamodule.source_records()["s2_change"]
    statistics = record.statistics_for(datamodule.input_specs("s2_change"), "s2_change")["s2"]
    assert set(statistics.mean) == {0.2} and set(statistics.std) == {0.15}
    assert not isinstance(datamodule.datasets("train")[names.index("s1s2_landcover")],
                          VirtualSensorPatchDataset)  # fmt: skip


def test_real_sensor_items_are_padded_and_jittered_in_metadata(tmp_path, datamodule):
    options = dict(datamodule.hparams)
    options["virtual_sensors"] = VirtualSensors(probability=0.0, jitter_nm=5.0)
    dm = SpectralWorldDataModule(**options)
    item = _train(dm, "aerial_landcover")[EpochIndex(0, 0)]
    nominal = [b.wavelength_nm for b in get_sensor("isprs_rgbir").bands]
    declared = item.wavelength_nm[0, :4].tolist()
    assert declared != pytest.approx(nominal) and declared == pytest.approx(nominal, abs=25)
    assert item.image.shape[2] == 13 and not bool(item.band_mask[0, :, 4:].any())


def test_unfit_sources_are_refused(datamodule):
    options = dict(datamodule.hparams)
    options["virtual_sensors"] = VirtualSensors(sources=("s1s2_landcover",))
    with pytest.raises(ConfigError, match="s1s2_landcover"):
        SpectralWorldDataModule(**options)


def test_pad_item_refuses_to_shrink(datamodule):
    item = _train(datamodule, "s2_change")[EpochIndex(0, 0)]
    with pytest.raises(ValueError, match="Cannot pad"):
        pad_item(item, 2, PATCH)


def test_world_with_surfaces_serves_a_world_without(tmp_path):
    SpectralWorld(tmp_path, scene_size=16, scenes_per_source=1, sources=["s2_clouds"],
                  surfaces=True).generate()  # fmt: skip
    plain = SpectralWorld(tmp_path, scene_size=16, scenes_per_source=1, sources=["s2_clouds"])
    assert plain.is_complete()
    plain.generate(force=True)
    again = SpectralWorld(tmp_path, scene_size=16, scenes_per_source=1, sources=["s2_clouds"],
                          surfaces=True)  # fmt: skip
    assert not again.is_complete()


def test_band_matrix_of_many_bands_is_each_band_alone_bit_for_bit():
    from stsun_lightning.data.datasets.world.spectra import MATERIALS, band_matrix

    spectra = tuple(MATERIALS.values())
    bands = get_sensor("landsat8_oli_tirs").bands + get_sensor("sentinel2_l1c").bands
    for toa in (False, True):
        together = band_matrix(spectra, bands, toa)
        alone = np.array([[band_matrix((s,), (b,), toa)[0, 0] for b in bands] for s in spectra])
        assert np.array_equal(together, alone)


def test_the_network_trains_on_a_virtual_sensor_batch(datamodule):
    from stsun_lightning.models import create_model
    from stsun_lightning.tasks.losses import category_loss

    torch.manual_seed(0)
    vocab = datamodule.vocabularies
    model = create_model("stsun_tiny", categories=vocab["categories"], tasks=vocab["tasks"])
    dataset = _train(datamodule, "s2_change")
    batch = collate_batches([dataset[EpochIndex(0, i)] for i in range(3)]).validate()
    loss = category_loss(model(batch).logits, batch.target)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


def test_coarse_crops_coarsen_real_sensor_items_and_leave_virtual_ones_alone(datamodule):
    options = {**datamodule.hparams, "coarsen": 1.0, "coarsen_factors": [2]}
    real_only = SpectralWorldDataModule(
        **{**options, "virtual_sensors": VirtualSensors(probability=0.0)}
    )
    virtual_only = SpectralWorldDataModule(**options)
    gsd = float(_train(datamodule, "s2_change").patches.scenes[0].gsd_m)
    real = _train(real_only, "s2_change")[EpochIndex(0, 1)]
    assert real.image.shape[-2:] == (PATCH, PATCH) and float(real.gsd_m[0]) == 2 * gsd
    coarse = _train(virtual_only, "s2_change")
    read: list[tuple[float, ...]] = []

    def recording(original):
        def read_and_record(bounds, *args, **kwargs):
            read.append(bounds)
            return original(bounds, *args, **kwargs)

        return read_and_record

    for surfaces in coarse.surfaces:
        surfaces.read = recording(surfaces.read)
    res = coarse.patches.scenes[0].series.grid.res[0]
    for i in range(4):  # a virtual item reads the patch's own window and draws its own GSD
        ref = coarse.patches.patch(0, i)
        item = coarse[EpochIndex(0, i)]
        assert ref.factor == 2 and item.image.shape[-1] == PATCH
        left, bottom, right, top = read[-1]
        assert (left, top) == (ref.left, ref.top)
        assert right - left == top - bottom == PATCH * res
