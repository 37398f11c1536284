"""Rasters on disk as scenes to predict: grouping, dates, grids, and a clear error for each
bad input."""

from datetime import date

import numpy as np
import pytest
import rasterio
from rasters import BANDS, s2_input, write_raster
from torch.utils.data import SequentialSampler

from stsun_lightning.data.datamodules.rasters import RasterPredictionDataModule
from stsun_lightning.data.datasets.frames import FrameRule
from stsun_lightning.data.datasets.scenes import prediction_scenes
from stsun_lightning.data.samplers.jobs import JobBatchSampler
from stsun_lightning.data.spec import InputSpec
from stsun_lightning.errors import UnknownNameError

STATISTICS = {"s2": {"mean": [1000.0] * 4, "std": [500.0] * 4}}


def scenes_of(inputs, **kwargs):
    specs = {n: InputSpec.parse(n, s) for n, s in inputs.items()}
    return prediction_scenes(specs, kwargs.pop("rule", FrameRule()), **kwargs)


def frame_days(scene):
    return tuple(f.day for f in scene.series.frames)


def test_files_group_into_scenes_by_name_with_frames_in_date_order(tmp_path):
    for name in ("a_20210801", "a_20210401", "b_2021-05-02", "b_2021-05-01"):
        write_raster(tmp_path / f"{name}.tif", 16, 16)
    scenes = scenes_of(s2_input(str(tmp_path)))
    assert [s.name for s in scenes] == ["a", "b"]
    assert frame_days(scenes[0]) == (date(2021, 4, 1), date(2021, 8, 1))
    assert [p.name for p in scenes[0].files["s2"]] == ["a_20210401.tif", "a_20210801.tif"]
    assert frame_days(scenes[1]) == (date(2021, 5, 1), date(2021, 5, 2))
    assert scenes[0].gsd_m == 10.0 and (scenes[0].extent.height, scenes[0].extent.width) == (16, 16)


def test_dates_come_from_tags_when_the_name_has_none_and_are_unknown_otherwise(tmp_path):
    tagged = write_raster(tmp_path / "tagged.tif", 8, 8)
    with rasterio.open(tagged, "r+") as dst:
        dst.update_tags(TIFFTAG_DATETIME="2020:07:14 10:30:00")
    write_raster(tmp_path / "plain.tif", 8, 8)
    scenes = {s.name: s for s in scenes_of(s2_input(str(tmp_path / "*.tif")))}
    assert frame_days(scenes["tagged"]) == (date(2020, 7, 14),)
    assert frame_days(scenes["plain"]) == (None,)


def test_a_scene_pattern_groups_files_whose_names_differ(tmp_path):
    write_raster(tmp_path / "T32TQM_20210601_L2A.tif", 8, 8)
    write_raster(tmp_path / "T32TQM_20210701_L2A.tif", 8, 8)
    scenes = scenes_of(s2_input(str(tmp_path)), scene_pattern=r"^(?P<scene>T\w{5})_")
    assert [s.name for s in scenes] == ["T32TQM"] and len(scenes[0].series.frames) == 2


def test_other_inputs_join_a_scene_by_place_not_by_name_on_their_own_dates(tmp_path):
    write_raster(tmp_path / "s2" / "x_20210601.tif", 8, 8)
    write_raster(tmp_path / "s2" / "x_20210901.tif", 8, 8, seed=1)
    write_raster(tmp_path / "s1" / "S1A_IW_20200115.tif", 8, 8, count=2)
    write_raster(tmp_path / "s1" / "S1A_IW_20231230.tif", 8, 8, count=2, seed=2)
    write_raster(tmp_path / "s1" / "far_20200115.tif", 8, 8, count=2, origin=(700_000, 5_500_000))
    inputs = {
        **s2_input(str(tmp_path / "s2")),
        "s1": {"sensor": "sentinel1", "bands": ["VV", "VH"], "paths": str(tmp_path / "s1")},
    }
    (scene,) = scenes_of(inputs)
    assert list(scene.series.specs) == ["s2", "s1"] and scene.series.bands["s1"] == ("VV", "VH")
    assert [p.name for p in scene.files["s1"]] == ["S1A_IW_20200115.tif", "S1A_IW_20231230.tif"]
    frames = scene.series.frames  # every date of every input is a frame of its own
    assert [f.day for f in frames] == [
        date(2020, 1, 15), date(2021, 6, 1), date(2021, 9, 1), date(2023, 12, 30)
    ]  # fmt: skip
    assert [sorted(f.members) for f in frames] == [["s1"], ["s2"], ["s2"], ["s1"]]


def test_a_tolerance_pairs_the_acquisitions_of_two_inputs_into_one_frame(tmp_path):
    write_raster(tmp_path / "s2" / "x_20210601.tif", 8, 8)
    write_raster(tmp_path / "s2" / "x_20210603.tif", 8, 8)
    write_raster(tmp_path / "s1" / "x_20210602.tif", 8, 8, count=2)
    inputs = {
        **s2_input(str(tmp_path / "s2")),
        "s1": {"sensor": "sentinel1", "bands": ["VV", "VH"], "paths": str(tmp_path / "s1")},
    }
    (scene,) = scenes_of(inputs, rule=FrameRule(tolerance_days=3))
    frames = scene.series.frames  # s1 joins the first s2 frame; s2's own dates stay apart
    assert [(f.day, dict(f.members)) for f in frames] == [
        (date(2021, 6, 1), {"s2": (date(2021, 6, 1),), "s1": (date(2021, 6, 2),)}),
        (date(2021, 6, 3), {"s2": (date(2021, 6, 3),)}),
    ]


def test_a_second_date_on_another_grid_is_read_onto_the_first_files_grid(tmp_path):
    write_raster(tmp_path / "x_20210601.tif", 8, 8, constant=True)
    write_raster(tmp_path / "x_20210701.tif", 8, 8, constant=True, origin=(600_010, 5_500_000))
    (scene,) = scenes_of(s2_input(str(tmp_path)))
    assert scene.extent.left == 600_000 and scene.extent.width == 9  # union of both footprints
    scene.series.set_statistics({"s2": scene.series.statistics or _stats(STATISTICS)["s2"]})
    values = scene.series.read_physical(scene.extent.bounds)
    assert np.isnan(values[0, :, :, 8]).all() and np.isnan(values[1, :, :, 0]).all()
    assert (values[0, :, :, :8] == 1200).all() and (values[1, :, :, 1:] == 1200).all()


def _stats(given):
    from stsun_lightning.data.io.statistics import given_statistics

    return given_statistics(given, {"s2": tuple(BANDS)})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: write_raster(d / "x.tif", 8, 8, crs=None), "x.tif has no CRS"),
        (
            lambda d: write_raster(d / "x.tif", 8, 8, count=3),
            "x.tif has 3 band(s), expected 4",
        ),
        (lambda d: (d / "x.tif").write_bytes(b"II*\x00 truncated"), "cannot open"),
        (lambda d: None, "matches no raster"),
    ],
    ids=["no-crs", "band-count", "corrupt", "empty-folder"],
)
def test_bad_rasters_get_an_error_naming_the_file(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(
        (ValueError, FileNotFoundError), match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        scenes_of(s2_input(str(tmp_path)))


def test_an_input_that_meets_no_scene_is_named(tmp_path):
    write_raster(tmp_path / "s2" / "x_20210601.tif", 8, 8)
    write_raster(tmp_path / "dem" / "dem.tif", 8, 8, count=1, origin=(900_000, 5_500_000))
    inputs = {
        **s2_input(str(tmp_path / "s2")),
        "dem": {"sensor": "copernicus_dem", "paths": str(tmp_path / "dem")},
    }
    with pytest.raises(ValueError, match=r"Scene 'x': input 'dem' has no file that meets it"):
        scenes_of(inputs)


def test_a_region_cuts_the_scenes_and_one_outside_them_is_an_error(tmp_path):
    write_raster(tmp_path / "a.tif", 40, 40)
    write_raster(tmp_path / "b.tif", 40, 40, origin=(800_000, 5_500_000))
    (scene,) = scenes_of(s2_input(str(tmp_path)), region=[600_100, 5_499_700, 600_250, 5_499_900])
    assert scene.name == "a"
    assert (scene.extent.left, scene.extent.top) == (600_100, 5_499_900)
    assert (scene.extent.height, scene.extent.width) == (20, 15)
    with pytest.raises(ValueError, match=r"region .* meets no scene of input 's2'"):
        scenes_of(s2_input(str(tmp_path)), region=[0, 0, 10, 10])


def test_an_unknown_band_names_the_sensor_and_the_closest_band(tmp_path):
    write_raster(tmp_path / "x.tif", 8, 8)
    inputs = {
        "s2": {
            "sensor": "sentinel2_l2a",
            "bands": ["B02", "B03", "B04", "B8"],
            "paths": str(tmp_path),
        }
    }
    with pytest.raises(UnknownNameError, match=r"sentinel2_l2a.*'B8'"):
        scenes_of(inputs)


def test_the_datamodule_asks_for_categories_or_variables_and_checks_statistics(tmp_path):
    write_raster(tmp_path / "x.tif", 8, 8)
    with pytest.raises(ValueError, match="either 'categories' or 'variables'"):
        RasterPredictionDataModule(s2_input(str(tmp_path)))
    datamodule = RasterPredictionDataModule(
        s2_input(str(tmp_path)),
        categories=["water"],
        statistics={"s2": {"mean": [0.0], "std": [1.0]}},
    )
    with pytest.raises(
        ValueError, match=r"statistics\['s2'\] needs 'mean' and 'std' with 4 values"
    ):
        datamodule.prediction_jobs()


def test_without_a_checkpoints_statistics_prediction_says_what_to_do(tmp_path):
    write_raster(tmp_path / "x.tif", 8, 8)
    datamodule = RasterPredictionDataModule(s2_input(str(tmp_path)), categories=["water"])
    with pytest.raises(ValueError, match=r"carries no band statistics.*statistics: rasters"):
        datamodule.prediction_jobs()


def test_window_batches_never_mix_two_scenes(tmp_path):
    write_raster(tmp_path / "a.tif", 40, 40)
    write_raster(tmp_path / "b.tif", 20, 20)
    datamodule = RasterPredictionDataModule(
        s2_input(str(tmp_path)), categories=["water"], window=16, overlap=4, batch_size=4,
        statistics=STATISTICS,
    )  # fmt: skip
    loader = datamodule.predict_dataloader()
    dataset = loader.dataset
    assert len(dataset) == 9 + 4  # 3×3 windows (stride 12, the last flush with the edge), then 2×2
    batches = list(JobBatchSampler(SequentialSampler(dataset), 4, job_starts=dataset.job_starts))
    assert [len(b) for b in batches] == [4, 4, 1, 4]
    for batch in batches:
        assert len({dataset.windows[i].job for i in batch}) == 1
    batches = list(JobBatchSampler(SequentialSampler(dataset), 3, job_starts=dataset.job_starts))
    assert [len(b) for b in batches] == [3, 3, 3, 3, 1]
    batch = next(iter(loader))
    assert batch.image.shape == (4, 1, len(BANDS), 16, 16)


def test_an_input_without_sensor_or_paths_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"Input 's2' misses \['sensor'\]"):
        RasterPredictionDataModule({"s2": {"paths": str(tmp_path)}}, categories=["water"])


def test_ddp_ranks_predict_disjoint_scenes_that_cover_all(tmp_path):
    from types import SimpleNamespace

    for name in "abcde":
        write_raster(tmp_path / f"{name}.tif", 16, 16)
    datamodule = RasterPredictionDataModule(
        s2_input(str(tmp_path)), categories=["water"], window=16, overlap=0, statistics=STATISTICS
    )
    seen = []
    for rank in range(2):
        datamodule.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        seen.append([job.scene.name for job in datamodule.predict_dataloader().dataset.jobs])
    assert seen == [["a", "c", "e"], ["b", "d"]]


def test_a_sensor_described_in_yaml_or_inline_reads_like_a_registered_one(tmp_path):
    import yaml

    write_raster(tmp_path / "x.tif", 8, 8, count=2)
    sensor = {
        "name": "my_camera",
        "bands": [
            {"name": "red", "wavelength_nm": 650, "bandwidth_nm": 40, "gsd_m": 10, "modality": "optical"},
            {"name": "nir", "wavelength_nm": 850, "bandwidth_nm": 60, "gsd_m": 10, "modality": "optical"},
        ],
    }  # fmt: skip
    (tmp_path / "camera.yaml").write_text(yaml.safe_dump(sensor))
    for spec in (str(tmp_path / "camera.yaml"), sensor):
        (scene,) = scenes_of({"cam": {"sensor": spec, "paths": str(tmp_path / "x.tif")}})
        assert scene.series.specs["cam"].sensor.name == "my_camera"
        assert scene.series.bands["cam"] == ("red", "nir")
