"""Rasters on disk as scenes: grouping, dates, and a clear error for each bad input."""

from datetime import date

import pytest
import rasterio
from rasters import BANDS, s2_input, write_raster
from torch.utils.data import SequentialSampler

from stsun_lightning.data.datamodules.rasters import RasterPredictionDataModule, group_scenes
from stsun_lightning.data.samplers.jobs import JobBatchSampler
from stsun_lightning.errors import UnknownNameError


def test_files_group_into_scenes_by_name_with_frames_in_date_order(tmp_path):
    for name in ("a_20210801", "a_20210401", "b_2021-05-02", "b_2021-05-01"):
        write_raster(tmp_path / f"{name}.tif", 16, 16)
    scenes = group_scenes(s2_input(str(tmp_path)))
    assert [s.name for s in scenes] == ["a", "b"]
    assert scenes[0].dates == (date(2021, 4, 1), date(2021, 8, 1))
    assert [p.name for p in scenes[0].inputs["s2"].files] == ["a_20210401.tif", "a_20210801.tif"]
    assert scenes[1].dates == (date(2021, 5, 1), date(2021, 5, 2))
    assert scenes[0].gsd_m == 10.0 and (scenes[0].height, scenes[0].width) == (16, 16)


def test_dates_come_from_tags_when_the_name_has_none_and_are_unknown_otherwise(tmp_path):
    tagged = write_raster(tmp_path / "tagged.tif", 8, 8)
    with rasterio.open(tagged, "r+") as dst:
        dst.update_tags(TIFFTAG_DATETIME="2020:07:14 10:30:00")
    write_raster(tmp_path / "plain.tif", 8, 8)
    scenes = {s.name: s for s in group_scenes(s2_input(str(tmp_path / "*.tif")))}
    assert scenes["tagged"].dates == (date(2020, 7, 14),)
    assert scenes["plain"].dates == (None,)


def test_a_scene_pattern_groups_files_whose_names_differ(tmp_path):
    write_raster(tmp_path / "T32TQM_20210601_L2A.tif", 8, 8)
    write_raster(tmp_path / "T32TQM_20210701_L2A.tif", 8, 8)
    scenes = group_scenes(s2_input(str(tmp_path)), scene_pattern=r"^(?P<scene>T\w{5})_")
    assert [s.name for s in scenes] == ["T32TQM"] and len(scenes[0].dates) == 2


def test_two_inputs_on_one_grid_form_one_scene(tmp_path):
    write_raster(tmp_path / "s2" / "x_20210601.tif", 8, 8)
    write_raster(tmp_path / "s1" / "x_20210601.tif", 8, 8, count=2)
    inputs = {
        **s2_input(str(tmp_path / "s2")),
        "s1": {"sensor": "sentinel1", "bands": ["VV", "VH"], "paths": str(tmp_path / "s1")},
    }
    (scene,) = group_scenes(inputs)
    assert list(scene.inputs) == ["s2", "s1"] and scene.inputs["s1"].bands == ("VV", "VH")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: write_raster(d / "x.tif", 8, 8, crs=None), "x.tif has no CRS"),
        (
            lambda d: write_raster(d / "x.tif", 8, 8, count=3),
            "x.tif has 3 band(s) but input 's2' expects 4",
        ),
        (lambda d: (d / "x.tif").write_bytes(b"II*\x00 truncated"), "cannot open"),
        (lambda d: None, "matches no raster"),
        (
            lambda d: (
                write_raster(d / "x_20210601.tif", 8, 8),
                write_raster(d / "x_20210701.tif", 8, 8, origin=(600_010, 5_500_000)),
            ),
            "x_20210701.tif is not on the grid of x_20210601.tif",
        ),
    ],
    ids=["no-crs", "band-count", "corrupt", "empty-folder", "other-grid"],
)
def test_bad_rasters_get_an_error_naming_the_file(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(
        (ValueError, FileNotFoundError), match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        group_scenes(s2_input(str(tmp_path)))


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
        group_scenes(inputs)


def test_the_datamodule_asks_for_categories_or_variables_and_checks_statistics(tmp_path):
    write_raster(tmp_path / "x.tif", 8, 8)
    with pytest.raises(ValueError, match="either 'categories' or 'variables'"):
        RasterPredictionDataModule(s2_input(str(tmp_path)))
    with pytest.raises(
        ValueError, match=r"statistics\['s2'\] needs 'mean' and 'std' with 4 values"
    ):
        RasterPredictionDataModule(
            s2_input(str(tmp_path)),
            categories=["water"],
            statistics={"s2": {"mean": [0.0], "std": [1.0]}},
        )


def test_window_batches_never_mix_two_scenes(tmp_path):
    write_raster(tmp_path / "a.tif", 40, 40)
    write_raster(tmp_path / "b.tif", 20, 20)
    datamodule = RasterPredictionDataModule(
        s2_input(str(tmp_path)), categories=["water"], window=16, overlap=4, batch_size=4
    )
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
    with pytest.raises(ValueError, match=r"Input 's2' needs 'sensor'.*got keys \['paths'\]"):
        group_scenes({"s2": {"paths": str(tmp_path)}})


def test_two_files_of_one_scene_and_date_are_an_error_naming_both(tmp_path):
    write_raster(tmp_path / "a" / "s2_20210601.tif", 8, 8)
    write_raster(tmp_path / "b" / "s2_20210601.tif", 8, 8)
    with pytest.raises(
        ValueError, match=r"s2_20210601.tif and .*s2_20210601.tif both fall in scene 's2'"
    ):
        group_scenes(s2_input(str(tmp_path / "*" / "*.tif")))


def test_ddp_ranks_predict_disjoint_scenes_that_cover_all(tmp_path):
    from types import SimpleNamespace

    for name in "abcde":
        write_raster(tmp_path / f"{name}.tif", 16, 16)
    datamodule = RasterPredictionDataModule(
        s2_input(str(tmp_path)), categories=["water"], window=16, overlap=0
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
            {
                "name": "red",
                "wavelength_nm": 650,
                "bandwidth_nm": 40,
                "gsd_m": 10,
                "modality": "optical",
            },
            {
                "name": "nir",
                "wavelength_nm": 850,
                "bandwidth_nm": 60,
                "gsd_m": 10,
                "modality": "optical",
            },
        ],
    }
    (tmp_path / "camera.yaml").write_text(yaml.safe_dump(sensor))
    for spec in (str(tmp_path / "camera.yaml"), sensor):
        (scene,) = group_scenes({"cam": {"sensor": spec, "paths": str(tmp_path / "x.tif")}})
        assert scene.inputs["cam"].sensor.name == "my_camera"
        assert scene.inputs["cam"].bands == ("red", "nir")
