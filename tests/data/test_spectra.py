import numpy as np
import pytest

from stsun_lightning.data.datasets.world.spectra import (
    MATERIALS,
    atmospheric_transmittance,
    band_matrix,
    band_reflectance,
    canopy_backscatter_db,
    canopy_shade_fraction,
    get_material,
    sar_matrix,
)
from stsun_lightning.data.sensors import Band, get_sensor
from stsun_lightning.errors import UnknownNameError

S2 = get_sensor("sentinel2_l2a")
S2_L1C = get_sensor("sentinel2_l1c")
L8 = get_sensor("landsat8_oli_tirs")
S1 = get_sensor("sentinel1")
GROUND = [m for m in MATERIALS.values() if m.vapour_above == 1.0]


def s2(material: str, band: str, toa: bool = False) -> float:
    sensor = S2_L1C if toa else S2
    return band_reflectance(MATERIALS[material], sensor.band(band), top_of_atmosphere=toa)


@pytest.mark.parametrize("material", sorted(MATERIALS))
@pytest.mark.parametrize(("s2_band", "l8_band"), [("B04", "B4"), ("B8A", "B5"), ("B03", "B3")])
def test_overlapping_bands_of_two_sensors_agree(material, s2_band, l8_band):
    a = band_reflectance(MATERIALS[material], S2.band(s2_band))
    b = band_reflectance(MATERIALS[material], L8.band(l8_band))
    assert abs(a - b) <= 0.02 + 0.05 * max(a, b), (material, a, b)


@pytest.mark.parametrize("material", sorted(MATERIALS))
def test_spectra_are_smooth_and_physical(material):
    wavelengths = np.arange(400.0, 2501.0, 1.0)
    values = MATERIALS[material](wavelengths)
    assert values.shape == wavelengths.shape
    assert np.all(values >= 0) and np.all(values <= 1)
    assert np.abs(np.diff(values)).max() < 0.02  # no jumps between 1 nm steps


def test_green_vegetation_shape():
    red, nir = s2("green_vegetation", "B04"), s2("green_vegetation", "B08")
    assert nir > 5 * red
    assert s2("green_vegetation", "B03") > max(s2("green_vegetation", "B02"), red)  # green peak
    edge = [s2("green_vegetation", b) for b in ("B04", "B05", "B06", "B07")]
    assert np.all(np.diff(edge) > 0), edge  # the red edge rises
    veg = MATERIALS["green_vegetation"]
    for dip, shoulders in ((1450, (1300, 1650)), (1940, (1800, 2200))):
        assert veg(dip) < 0.7 * min(veg(shoulders[0]), veg(shoulders[1]))  # leaf water


def test_other_material_shapes():
    assert s2("water", "B08") < s2("water", "B04") < s2("water", "B03")
    assert s2("water", "B11") < 0.01
    assert s2("turbid_water", "B04") > s2("water", "B04")
    soil = [s2("soil", b) for b in ("B02", "B04", "B08", "B11")]
    assert np.all(np.diff(soil) > 0)  # soil brightens with wavelength
    assert s2("dry_vegetation", "B04") > 2 * s2("green_vegetation", "B04")  # no chlorophyll
    asphalt = [s2("asphalt", b.name) for b in S2.bands]
    assert max(asphalt) < 0.12 and max(asphalt) - min(asphalt) < 0.05  # dark and flat
    assert s2("roof", "B04") > 2 * s2("asphalt", "B04")
    assert all(s2("cloud", b.name) > 0.4 for b in S2.bands)
    assert s2("cloud", "B12") < s2("cloud", "B04")  # lower in the SWIR


def test_cirrus_band_sees_clouds_but_not_the_ground():
    assert s2("cloud", "B10", toa=True) > 0.1
    for material in GROUND:
        assert band_reflectance(material, S2_L1C.band("B10"), top_of_atmosphere=True) < 0.01
    # Outside absorption bands the ground still shows through the atmosphere.
    assert s2("green_vegetation", "B08", toa=True) > 0.3
    assert s2("green_vegetation", "B01", toa=True) > s2("green_vegetation", "B01")  # path
    transmittance = atmospheric_transmittance([865.0, 1375.0])
    assert transmittance[0] > 0.8 > 0.01 > transmittance[1]


def test_unknown_bandwidth_uses_nominal_30_nm():
    red = get_sensor("isprs_rgbir").band("R")
    assert red.bandwidth_nm == 0
    nominal = Band("R30", red.wavelength_nm, 30.0, 1.0, "optical")
    for material in MATERIALS.values():
        assert band_reflectance(material, red) == pytest.approx(band_reflectance(material, nominal))


def test_thermal_bands_give_temperature_over_100_kelvin():
    b10 = L8.band("B10")
    for material in MATERIALS.values():
        assert band_reflectance(material, b10) == pytest.approx(
            material.brightness_temperature_k / 100
        )
    assert s2("soil", "B04") < 1 < band_reflectance(MATERIALS["soil"], b10)
    assert band_reflectance(MATERIALS["cloud"], b10) < band_reflectance(MATERIALS["water"], b10)


def test_band_matrix_shape_and_values():
    materials = [MATERIALS["soil"], MATERIALS["water"]]
    matrix = band_matrix(materials, S2.bands)
    assert matrix.shape == (2, len(S2.bands)) and matrix.dtype == np.float32
    assert matrix[0, 3] == pytest.approx(s2("soil", "B04"), abs=1e-6)


def test_sar_signatures():
    vv, vh = S1.select(["VV", "VH"])
    power = sar_matrix(
        [MATERIALS["water"], MATERIALS["roof"], MATERIALS["shaded_canopy"]], [vv, vh]
    )
    db = 10 * np.log10(np.maximum(power, 1e-12))
    assert db[0, 0] < -18 and db[0, 1] < -25  # water: specular, very dark
    assert db[1, 0] > -5  # buildings: double bounce
    assert np.all(power[2] == 0)  # canopies come from canopy_backscatter_db
    heights = np.array([0.0, 5.0, 10.0, 20.0, 30.0, 40.0])
    canopy_vh = canopy_backscatter_db(heights, vh)
    assert np.all(np.diff(canopy_vh) > 0)  # rises with height ...
    assert canopy_vh[-1] - canopy_vh[-2] < 0.3 * (canopy_vh[2] - canopy_vh[1])  # ... saturates
    assert canopy_backscatter_db(20.0, vh) > db[0, 1] + 10  # forest VH far above water
    shade = canopy_shade_fraction(heights)
    assert np.all(np.diff(shade) > 0) and shade[0] > 0 and shade[-1] < 1


def test_wrong_modality_and_unknown_names_raise():
    with pytest.raises(ValueError, match="optical"):
        band_reflectance(MATERIALS["soil"], S1.band("VV"))
    with pytest.raises(ValueError, match="SAR"):
        sar_matrix([MATERIALS["soil"]], [S2.band("B04")])
    with pytest.raises(UnknownNameError, match="soil"):
        get_material("soill")
    assert get_material("soil") is MATERIALS["soil"]
