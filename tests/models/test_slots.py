"""Output slots do not see each other: a slot's map is the same whatever else is asked for."""

import pytest
import torch

from conftest import CATEGORIES, make_batch
from stsun_lightning.batch import OutputKind
from stsun_lightning.models import create_model

ATOL = 1e-4
STATE, CHANGE, AGGREGATE = OutputKind.STATE, OutputKind.CHANGE, OutputKind.AGGREGATE


@pytest.fixture(scope="module", params=["hypernetwork", "attention"])
def model(request):
    torch.manual_seed(0)
    return create_model("stsun_tiny", categories=CATEGORIES, tokenizer=request.param).eval()


def _slots(model, outputs) -> torch.Tensor:
    batch = make_batch(t=3, c=4, h=40, w=32, outputs=outputs)
    with torch.no_grad():
        return model(batch).logits


def test_every_per_date_map_equals_the_state_map_at_its_date(model):
    per_date = _slots(model, [(STATE, i, i) for i in range(3)])
    for i in range(3):
        torch.testing.assert_close(
            per_date[:, i], _slots(model, [(STATE, i, i)])[:, 0], atol=ATOL, rtol=0
        )
    # The dates differ, so the maps do: the test compares maps that could disagree.
    assert (per_date[:, 0] - per_date[:, 2]).abs().max() > 1e-2


@pytest.mark.parametrize(
    "others",
    [
        [(CHANGE, 0, 2)],
        [(STATE, 0, 0), (STATE, 1, 1)],
        [(STATE, 2, 2)],  # a duplicate of itself
        [(AGGREGATE, -1, -1), (CHANGE, 1, 2)],
    ],
)
def test_a_slot_alone_equals_it_among_others(model, others):
    alone = _slots(model, [(STATE, 2, 2)])[:, 0]
    among = _slots(model, [*others, (STATE, 2, 2)])
    torch.testing.assert_close(among[:, -1], alone, atol=ATOL, rtol=0)
    change_alone = _slots(model, [(CHANGE, 0, 2)])[:, 0]
    torch.testing.assert_close(
        _slots(model, [(CHANGE, 0, 2), *others])[:, 0], change_alone, atol=ATOL, rtol=0
    )
