import pytest
import torch
import yaml

from stsun_lightning.batch import Modality
from stsun_lightning.data import sensors
from stsun_lightning.data.sensors import (
    Band,
    Sensor,
    get_sensor,
    list_sensors,
    load_sensor_yaml,
    register_sensor,
)
from stsun_lightning.errors import UnknownNameError


@pytest.fixture
def clean_registry(monkeypatch):
    """Let a test register sensors without leaking them into other tests."""
    monkeypatch.setattr(sensors, "_REGISTRY", dict(sensors._REGISTRY))


def _spec(**band_overrides):
    band = {
        "name": "B1",
        "wavelength_nm": 500,
        "bandwidth_nm": 10,
        "gsd_m": 5,
        "modality": "optical",
    }
    band.update(band_overrides)
    band = {k: v for k, v in band.items() if v is not None}
    other = {"name": "B2", "wavelength_nm": 600, "gsd_m": 5, "modality": "optical"}
    return {"name": "mysensor", "description": "test", "bands": [other, band]}


EXPECTED = [
    "copernicus_dem",
    "hls_l30",
    "hls_s30",
    "isprs_dsm",
    "isprs_irrg",
    "isprs_rgbir",
    "landsat5_tm",
    "landsat7_etm",
    "landsat8_oli_tirs",
    "landsat9_oli_tirs",
    "modis",
    "naip",
    "planetscope_superdove",
    "sentinel1",
    "sentinel2_l1c",
    "sentinel2_l2a",
]


def test_list_sensors_sorted_and_complete():
    assert list_sensors() == sorted(list_sensors())
    assert set(EXPECTED) <= set(list_sensors())


@pytest.mark.parametrize("name", EXPECTED)
def test_every_sensor_is_consistent(name):
    sensor = get_sensor(name)
    assert sensor.name == name
    assert sensor.bands
    assert len(set(sensor.band_names)) == len(sensor.bands)
    for band in sensor.bands:
        assert isinstance(band.modality, Modality)
        if band.modality is Modality.ELEVATION:
            assert band.wavelength_nm == 0
            assert band.bandwidth_nm == 0
        else:
            assert band.wavelength_nm > 0
        assert band.bandwidth_nm >= 0
        assert band.gsd_m > 0
    assert sensor.gsd_m == min(b.gsd_m for b in sensor.bands)
    assert Sensor.from_dict(sensor.to_dict()) == sensor


def test_sentinel2_spot_values():
    l2a, l1c = get_sensor("sentinel2_l2a"), get_sensor("sentinel2_l1c")
    assert len(l2a.bands) == 12 and "B10" not in l2a.band_names
    assert len(l1c.bands) == 13 and l1c.band_names[8] == "B8A" and "B10" in l1c.band_names
    assert l2a.band("B04").wavelength_nm == pytest.approx(665, abs=2)
    assert l2a.band("B8A").wavelength_nm == pytest.approx(865, abs=2)
    assert l2a.band("B11").wavelength_nm == pytest.approx(1610, abs=5)
    assert l1c.band("B10").wavelength_nm == pytest.approx(1375, abs=3)
    gsds = {b.name: b.gsd_m for b in l1c.bands}
    assert [gsds[n] for n in ("B01", "B02", "B05", "B08", "B8A", "B09", "B10", "B12")] == [
        60,
        10,
        20,
        10,
        20,
        60,
        60,
        20,
    ]
    assert l2a.gsd_m == 10


def test_landsat_spot_values():
    l8 = get_sensor("landsat8_oli_tirs")
    b10 = l8.band("B10")
    assert b10.wavelength_nm == pytest.approx(10895, abs=5)
    assert b10.gsd_m == 100 and b10.modality is Modality.THERMAL
    assert l8.band("B8").gsd_m == 15 and l8.gsd_m == 15
    assert l8.band("B4").wavelength_nm == pytest.approx(655, abs=3)
    assert get_sensor("landsat9_oli_tirs").band_names == l8.band_names
    assert get_sensor("landsat5_tm").band("B6").gsd_m == 120
    assert get_sensor("landsat7_etm").band("B6").gsd_m == 60
    assert get_sensor("landsat7_etm").band("B8").gsd_m == 15


def test_hls_and_other_spot_values():
    assert get_sensor("hls_l30").band_names == tuple(
        f"B{i:02d}" for i in (1, 2, 3, 4, 5, 6, 7, 9, 10, 11)
    )
    assert "B8A" in get_sensor("hls_s30").band_names
    assert all(b.gsd_m == 30 for n in ("hls_l30", "hls_s30") for b in get_sensor(n).bands)
    modis = get_sensor("modis")
    assert [b.gsd_m for b in modis.bands] == [250, 250, 500, 500, 500, 500, 500]
    assert modis.band("B1").wavelength_nm == pytest.approx(645)
    assert len(get_sensor("planetscope_superdove").bands) == 8
    assert get_sensor("naip").band_names == ("R", "G", "B", "NIR")
    assert get_sensor("isprs_irrg").band_names == ("IR", "R", "G")
    assert get_sensor("isprs_rgbir").gsd_m == pytest.approx(0.05)
    assert get_sensor("isprs_dsm").bands[0].modality is Modality.ELEVATION


def test_sentinel1_and_dem():
    s1 = get_sensor("sentinel1")
    vv = s1.band("VV")
    assert vv.wavelength_nm == pytest.approx(5.547e7, rel=1e-3)
    assert vv.modality is Modality.SAR_VV and vv.bandwidth_nm == 0
    assert [b.modality for b in s1.bands] == [
        Modality.SAR_VV,
        Modality.SAR_VH,
        Modality.SAR_HH,
        Modality.SAR_HV,
    ]
    dem = get_sensor("copernicus_dem")
    assert dem.band_names == ("elevation",)
    assert dem.bands[0].modality is Modality.ELEVATION
    assert dem.bands[0].wavelength_nm == 0 and dem.gsd_m == 30


def test_metadata_dtypes_shapes_and_order():
    s2 = get_sensor("sentinel2_l2a")
    meta = s2.metadata()
    assert set(meta) == {"wavelength_nm", "bandwidth_nm", "modality"}
    assert meta["wavelength_nm"].dtype == torch.float32 and meta["wavelength_nm"].shape == (12,)
    assert meta["bandwidth_nm"].dtype == torch.float32 and meta["bandwidth_nm"].shape == (12,)
    assert meta["modality"].dtype == torch.int64 and meta["modality"].shape == (12,)
    picked = s2.metadata(["B04", "B02"])
    assert picked["wavelength_nm"].tolist() == pytest.approx([665, 490], abs=3)
    assert [b.name for b in s2.select(["B04", "B02"])] == ["B04", "B02"]
    assert s2.select(None) == s2.bands
    s1 = get_sensor("s1").metadata(["VH", "VV"])
    assert s1["modality"].tolist() == [int(Modality.SAR_VH), int(Modality.SAR_VV)]


def test_unknown_sensor_error():
    with pytest.raises(UnknownNameError) as info:
        get_sensor("sentinel2_l2")
    message = str(info.value)
    assert "'sentinel2_l2a'" in message and "Did you mean" in message
    assert all(name in message for name in EXPECTED)
    with pytest.raises(KeyError):
        get_sensor("nope")


def test_unknown_band_error():
    with pytest.raises(ValueError) as info:
        get_sensor("sentinel2_l2a").band("B13")
    message = str(info.value)
    assert "sentinel2_l2a" in message and "'B13'" in message and "'B12'" in message
    with pytest.raises(UnknownNameError):
        get_sensor("sentinel2_l2a").metadata(["B04", "B10"])


def test_band_lookup_is_case_insensitive_fallback():
    assert get_sensor("s2").band("b8a").name == "B8A"


def test_aliases_and_case():
    assert get_sensor("sentinel2") is get_sensor("sentinel2_l2a")
    assert get_sensor("S2") is get_sensor("sentinel2_l2a")
    assert get_sensor("s1") is get_sensor("sentinel1")
    assert get_sensor("landsat8") is get_sensor("landsat8_oli_tirs")
    assert get_sensor("landsat9") is get_sensor("landsat9_oli_tirs")
    assert get_sensor("landsat7") is get_sensor("landsat7_etm")
    assert get_sensor("Landsat5") is get_sensor("landsat5_tm")
    assert get_sensor(" NAIP ") is get_sensor("naip")


def test_modality_parse():
    assert Modality.parse("optical") is Modality.OPTICAL
    assert Modality.parse("SAR_VV") is Modality.SAR_VV
    assert Modality.parse("sar-vh") is Modality.SAR_VH
    assert Modality.parse(5) is Modality.ELEVATION
    assert Modality.parse(Modality.OTHER) is Modality.OTHER
    assert Modality.parse("thermal") is Modality.THERMAL
    for bad in ("sar", 8, True):
        with pytest.raises(ValueError, match="optical") as info:
            Modality.parse(bad)
    assert "sar_vv" in str(info.value)


def test_from_dict_valid_and_defaults():
    sensor = Sensor.from_dict(_spec(modality="SAR_HH", wavelength_nm="5.5e7"))
    assert sensor.name == "mysensor" and sensor.band_names == ("B2", "B1")
    assert sensor.band("B2").bandwidth_nm == 0
    assert sensor.band("B1").modality is Modality.SAR_HH
    assert sensor.band("B1").wavelength_nm == 5.5e7


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"gsd_m": None}, "gsd_m", "missing"),
        ({"modality": "radar"}, "modality", "Known"),
        ({"name": "B2"}, "name", "unique"),
        ({"wavelength_nm": -5}, "wavelength_nm", "> 0"),
        ({"wavelength_nm": "abc"}, "wavelength_nm", "finite number"),
        ({"bandwidth_nm": -1}, "bandwidth_nm", ">= 0"),
        ({"gsd_m": 0}, "gsd_m", "> 0"),
        ({"modality": "elevation"}, "wavelength_nm", "expected 0"),
        ({"wavelenght_nm": 3}, "wavelenght_nm", "unexpected"),
    ],
)
def test_from_dict_errors_name_sensor_band_and_field(overrides, field, expected):
    with pytest.raises(ValueError) as info:
        Sensor.from_dict(_spec(**overrides))
    message = str(info.value)
    band_name = overrides.get("name", "B1")
    assert "'mysensor'" in message
    assert f"band 1 ('{band_name}')" in message
    assert f"'{field}'" in message
    assert expected in message


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "mysensor", "bands": []},
        {"name": "mysensor"},
        {"name": "mysensor", "bands": ["B1"]},
    ],
)
def test_from_dict_bad_band_lists(spec):
    with pytest.raises(ValueError, match="mysensor"):
        Sensor.from_dict(spec)


def test_from_dict_bad_sensor_name():
    with pytest.raises(ValueError, match="'name'"):
        Sensor.from_dict({"bands": _spec()["bands"]})


def test_band_and_sensor_validate_directly():
    with pytest.raises(ValueError, match="gsd_m"):
        Band("x", 500, 10, -1, Modality.OPTICAL)
    assert Band("x", 500, 10, 1, "sar_vv").modality is Modality.SAR_VV
    band = Band("x", 500, 10, 1, Modality.OPTICAL)
    with pytest.raises(ValueError, match="duplicate"):
        Sensor("dup", (band, band))
    with pytest.raises(ValueError, match="non-empty"):
        Sensor("empty", ())


def test_register_sensor(clean_registry):
    sensor = register_sensor(_spec())
    assert get_sensor("MySensor") is sensor
    assert "mysensor" in list_sensors()
    with pytest.raises(ValueError, match="already registered"):
        register_sensor(sensor)
    replacement = Sensor("mysensor", sensor.bands[:1])
    assert register_sensor(replacement, overwrite=True) is get_sensor("mysensor")
    with pytest.raises(ValueError, match="alias"):
        register_sensor(Sensor("s2", sensor.bands))


def test_registry_is_clean_after_fixture():
    assert "mysensor" not in list_sensors()
    assert "yaml_a" not in list_sensors()


def test_load_sensor_yaml_single_round_trip(tmp_path, clean_registry):
    original = get_sensor("sentinel2_l2a").to_dict() | {"name": "my_s2"}
    path = tmp_path / "s2.yaml"
    path.write_text(yaml.safe_dump(original))
    loaded = load_sensor_yaml(path)
    assert isinstance(loaded, Sensor)
    assert loaded.bands == get_sensor("sentinel2_l2a").bands
    assert get_sensor("my_s2") is loaded


def test_load_sensor_yaml_many_without_register(tmp_path, clean_registry):
    path = tmp_path / "many.yaml"
    path.write_text(
        "sensors:\n"
        "  - name: yaml_a\n"
        "    bands:\n"
        "      - {name: VV, wavelength_nm: 5.5e+7, gsd_m: 20, modality: sar_vv}\n"
        "  - name: yaml_b\n"
        "    bands:\n"
        "      - {name: dsm, wavelength_nm: 0, gsd_m: 1, modality: elevation}\n"
    )
    loaded = load_sensor_yaml(path, register=False)
    assert [s.name for s in loaded] == ["yaml_a", "yaml_b"]
    assert "yaml_a" not in list_sensors()
    assert load_sensor_yaml(str(path)) == loaded
    assert get_sensor("yaml_b").bands[0].modality is Modality.ELEVATION


def test_load_sensor_yaml_is_all_or_nothing(tmp_path, clean_registry):
    path = tmp_path / "clash.yaml"
    path.write_text(
        yaml.safe_dump({"sensors": [_spec() | {"name": "fresh"}, _spec() | {"name": "naip"}]})
    )
    with pytest.raises(ValueError, match="already registered") as info:
        load_sensor_yaml(path)
    assert str(path) in str(info.value)
    assert "fresh" not in list_sensors()


def test_load_sensor_yaml_errors_name_the_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbands: [unclosed\n")
    with pytest.raises(ValueError) as info:
        load_sensor_yaml(bad)
    assert str(bad) in str(info.value)

    missing = tmp_path / "missing.yaml"
    with pytest.raises(ValueError) as info:
        load_sensor_yaml(missing)
    assert str(missing) in str(info.value)

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(yaml.safe_dump(_spec(gsd_m=-1)))
    with pytest.raises(ValueError) as info:
        load_sensor_yaml(invalid, register=False)
    assert str(invalid) in str(info.value) and "gsd_m" in str(info.value)


@pytest.mark.parametrize(
    ("sensor", "thermal"),
    [
        ("landsat5_tm", {"B6"}),
        ("landsat7_etm", {"B6"}),
        ("landsat8_oli_tirs", {"B10", "B11"}),
        ("landsat9_oli_tirs", {"B10", "B11"}),
        ("hls_l30", {"B10", "B11"}),
    ],
)
def test_every_thermal_band_has_the_thermal_modality(sensor, thermal):
    bands = get_sensor(sensor).bands
    assert {b.name for b in bands if b.modality is Modality.THERMAL} == thermal
    # And no band of any registered sensor beyond 3000 nm passes for optical.
    for name in list_sensors():
        for band in get_sensor(name).bands:
            if band.modality is Modality.OPTICAL:
                assert band.wavelength_nm < 3000, (name, band.name)
