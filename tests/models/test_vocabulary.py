import io

import pytest
import torch

from stsun_lightning.errors import UnknownNameError
from stsun_lightning.models import create_model
from stsun_lightning.models.vocabulary import Vocabulary, VocabularyEmbedding


def test_vocabulary_rows_are_positions_and_new_names_append():
    vocab = Vocabulary(["water", "building"], "category")
    assert vocab.indices(["building", "water"]) == [1, 0]
    assert vocab.add(["water", "tree_cover"]) == ["tree_cover"]
    assert vocab.names == ["water", "building", "tree_cover"]


def test_unknown_name_lists_known_names_and_the_closest():
    vocab = Vocabulary(["water", "building", "tree_cover"], "category")
    with pytest.raises(UnknownNameError) as err:
        vocab.index("buildings")
    message = str(err.value)
    assert "Unknown category 'buildings'" in message
    assert "Did you mean 'building'?" in message
    assert "tree_cover" in message and "water" in message


def test_duplicates_and_empty_names_are_rejected():
    with pytest.raises(ValueError, match="Duplicate category names: \\['water'\\]"):
        Vocabulary(["water", "water"], "category")
    with pytest.raises(ValueError, match="non-empty string"):
        Vocabulary([""], "task")


def test_adding_rows_keeps_the_existing_ones():
    table = VocabularyEmbedding(["a", "b"], 4, "category")
    before = table.weight.detach().clone()
    assert table.add(["b", "c"]) == ["c"]
    assert table.weight.shape == (3, 4)
    torch.testing.assert_close(table.weight[:2].detach(), before)
    assert table.rows(["c", "a"]).tolist() == [2, 0]


def test_checkpoint_carries_the_vocabularies_and_loads_with_weights_only():
    torch.manual_seed(0)
    model = create_model(
        "stsun_tiny", categories=["water", "building"], variables=["canopy_height"]
    )
    model.category_embedding.add(["snow"])
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    fresh = create_model("stsun_tiny")  # knows no categories yet
    fresh.load_state_dict(state)
    assert fresh.categories == ["water", "building", "snow"]
    assert fresh.variables == ["canopy_height"]
    assert fresh.tasks == model.tasks
    torch.testing.assert_close(fresh.category_embedding.weight, model.category_embedding.weight)
