import itertools

import numpy as np
import pytest

from stsun_lightning.data.datamodules.benchmarks.clouds import CLOUD_CATEGORIES
from stsun_lightning.data.datamodules.benchmarks.landcover import (
    IGBP_CATEGORIES,
    ISPRS_CATEGORIES,
    LOVEDA_CATEGORIES,
)
from stsun_lightning.data.datamodules.benchmarks.timeseries import PASTIS_CATEGORIES
from stsun_lightning.data.datasets.world.sources import COARSE_CLASSES, FINE_CLASSES
from stsun_lightning.palette import (
    NAMED_COLOURS,
    _lab,
    canonical_category,
    category_colours,
    class_colours,
    colour_table,
)
from stsun_lightning.tasks import panels


def _hue(rgb) -> float:
    r, g, b = (np.asarray(rgb, float) / 255).tolist()
    high, low = max(r, g, b), min(r, g, b)
    if high == low:
        return float("nan")
    if high == r:
        return (60 * (g - b) / (high - low)) % 360
    if high == g:
        return 60 * (b - r) / (high - low) + 120
    return 60 * (r - g) / (high - low) + 240


def test_common_land_cover_names_get_the_colours_people_expect():
    water, tree, grass, crop, built, bare, snow, cloud, change = category_colours(
        ["water", "tree_cover", "grassland", "cropland", "built_up", "bare_soil",
         "snow_and_ice", "cloud", "change"]
    ).astype(int)  # fmt: skip
    assert 190 <= _hue(water) <= 230 and water[2] > 150  # blue
    assert 90 <= _hue(tree) <= 150 and tree.max() < 120  # dark green
    assert 80 <= _hue(grass) <= 130 and grass.min() > 90  # light green
    assert 40 <= _hue(crop) <= 60 and crop[:2].min() > 200  # yellow
    assert (_hue(built) < 10 or _hue(built) > 350) and built[0] > 180  # red
    assert 20 <= _hue(bare) <= 40 and bare.max() < 180  # brown
    assert snow.min() >= 240  # white
    assert np.ptp(cloud) < 10 and 190 <= cloud.mean() < 240  # light grey
    assert 290 <= _hue(change) <= 310 and change[1] < 60  # magenta


def test_the_three_class_prediction_of_the_issue_draws_water_blue_and_trees_green():
    water, tree, crop = category_colours(["water", "tree_cover", "cropland"]).astype(int)
    assert water[2] > water[0] and tree[1] > tree[0] and tree[1] > tree[2]
    assert crop[0] > crop[2] and crop[1] > crop[2]  # yellow, not blue


@pytest.mark.parametrize(
    ("alias", "name"),
    [("forest", "tree_cover"), ("Tree Cover", "tree_cover"), ("barren", "bare_soil"),
     ("low_vegetation", "grassland"), ("building", "built_up"), ("clutter", "other"),
     ("snow", "snow_and_ice"), ("non_field", "other"), ("field", "cropland")],
)  # fmt: skip
def test_aliases_of_the_projects_names_resolve_to_the_named_colour(alias, name):
    assert canonical_category(alias) == name
    assert tuple(category_colours([alias])[0]) == NAMED_COLOURS[name]


def test_unknown_names_get_distinct_colours_away_from_every_named_colour():
    unknown = [f"crop_type_{i}" for i in range(24)]
    colours = category_colours(["water", *unknown])
    lab, named = _lab(colours[1:]), _lab(np.array(list(NAMED_COLOURS.values())))
    to_named = np.linalg.norm(lab[:, None] - named[None], axis=2)
    between = np.linalg.norm(lab[:, None] - lab[None], axis=2)[np.triu_indices(len(lab), 1)]
    assert to_named.min() >= 20 and between.min() >= 20  # CIE76 ΔE: clearly different


def test_colours_are_stable_and_distinct_within_every_dataset_of_the_project():
    assert np.array_equal(category_colours(PASTIS_CATEGORIES), category_colours(PASTIS_CATEGORIES))
    for names in (COARSE_CLASSES, FINE_CLASSES, LOVEDA_CATEGORIES, ISPRS_CATEGORIES,
                  IGBP_CATEGORIES, PASTIS_CATEGORIES, CLOUD_CATEGORIES):  # fmt: skip
        colours = [tuple(c) for c in category_colours(names)]
        assert len(set(colours)) == len(names), names
    # Two names for one colour in one map: the second gets a colour of its own.
    built_up, building = category_colours(["built_up", "building"])
    assert tuple(built_up) == NAMED_COLOURS["built_up"] and tuple(building) != tuple(built_up)


def test_panels_and_written_maps_share_the_palette():
    assert panels.class_colours is class_colours
    names = ["water", "tree_cover", "cropland"]
    np.testing.assert_allclose(
        class_colours(names).numpy() * 255, category_colours(names).astype(np.float32), atol=1e-4
    )
    table = colour_table(names, nodata=255)
    assert table[0] == (*NAMED_COLOURS["water"], 255) and table[255] == (0, 0, 0, 0)


def test_a_count_without_names_gives_distinct_colours_for_uint16_sized_maps():
    colours = category_colours(300)
    assert colours.shape == (300, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours}) == 300  # past the 256 of the sequence too
    pairs = itertools.combinations(map(tuple, colours[:40]), 2)
    assert all(a != b for a, b in pairs)
