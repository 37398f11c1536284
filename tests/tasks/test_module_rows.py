"""Batch rows follow the datamodule's vocabularies; the network's may differ (checkpoints)."""

import torch

from conftest import make_batch
from stsun_lightning.data.sources import build_vocabularies, parse_sources
from stsun_lightning.tasks.module import StsunTask

TRAINED = {
    "landcover": {
        "task": "semantic_segmentation",
        "categories": ["water", "tree_cover", "cropland"],
    },
    "height": {"task": "regression", "variables": ["canopy_height"]},
}


def other_datamodule_rows(sources: dict) -> dict[str, list[str]]:
    return build_vocabularies(parse_sources(sources))


def test_a_checkpoint_loaded_under_other_sources_predicts_the_same_categories():
    torch.manual_seed(0)
    trained = StsunTask("stsun_tiny", sources=TRAINED).eval()
    # A datamodule that only knows two of the categories, in another order.
    serving = {"rasters": {"task": "semantic_segmentation", "categories": ["cropland", "water"]}}
    reloaded = StsunTask("stsun_tiny", sources=serving).eval()
    reloaded.load_state_dict(trained.state_dict())
    assert reloaded.model.category_embedding.vocabulary.names == ["water", "tree_cover", "cropland"]

    trained_rows = trained.data_vocabularies
    batch_trained = make_batch(
        task=trained_rows["tasks"].index("semantic_segmentation"),
        categories=[trained_rows["categories"].index(n) for n in ("cropland", "water")],
    )
    serving_rows = reloaded.data_vocabularies
    batch_serving = make_batch(
        task=serving_rows["tasks"].index("semantic_segmentation"),
        categories=[serving_rows["categories"].index(n) for n in ("cropland", "water")],
    )
    assert not torch.equal(batch_trained.categories, batch_serving.categories)
    with torch.no_grad():
        expected = trained(batch_trained).logits
        got = reloaded(batch_serving).logits
    torch.testing.assert_close(got, expected)


def test_a_category_the_checkpoint_lacks_gets_a_new_row_marked_unlearnt():
    trained = StsunTask("stsun_tiny", sources=TRAINED)
    serving = {"rasters": {"task": "semantic_segmentation", "categories": ["water", "glacier"]}}
    reloaded = StsunTask("stsun_tiny", sources=serving)
    reloaded.load_state_dict(trained.state_dict())
    table = reloaded.model.category_embedding
    assert table.vocabulary.names == ["water", "tree_cover", "cropland", "glacier"]
    assert table.unlearnt == ["glacier"]
    rows = reloaded.data_vocabularies
    batch = make_batch(task=rows["tasks"].index("semantic_segmentation"), categories=[0, 1])
    with torch.no_grad():
        logits = reloaded(batch).logits
    assert logits is not None and logits.shape[2] == 2 and bool(torch.isfinite(logits).all())


def test_rows_are_left_alone_when_the_vocabularies_agree():
    task = StsunTask("stsun_tiny", sources=TRAINED)
    batch = make_batch(task=0, categories=[0, 1, 2])
    assert task.to_model_rows(batch) is batch
