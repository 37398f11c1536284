"""Task and category embeddings do what they promise on a briefly trained network.

A random network gives different outputs for different tasks or rows whatever its
wiring; these tests train it first, so they fail when the embedding cannot route.
"""

import dataclasses

import torch
import torch.nn.functional as F

from conftest import CATEGORIES, make_batch
from stsun_lightning.batch import Batch
from stsun_lightning.models import create_model


def _smooth(batch: Batch) -> Batch:
    b, t, c, h, w = batch.image.shape
    image = F.avg_pool2d(batch.image.flatten(0, 2)[:, None], 5, 1, 2)[:, 0].view(b, t, c, h, w)
    return dataclasses.replace(batch, image=image / image.std())


def _train(model, batches: list[Batch], steps: int, parameters=None, lr: float = 3e-3) -> None:
    model.train()
    optimizer = torch.optim.AdamW(
        parameters if parameters is not None else model.parameters(), lr=lr, weight_decay=0.0
    )
    for step in range(steps):
        batch = batches[step % len(batches)]
        optimizer.zero_grad()
        logits = model(batch).logits
        F.cross_entropy(logits.flatten(0, 1), batch.target.flatten(0, 1)).backward()
        optimizer.step()
    model.eval()


def _accuracy(model, batch: Batch) -> float:
    with torch.no_grad():
        return float((model(batch).logits.argmax(2) == batch.target).float().mean())


def test_the_task_embedding_routes_one_input_to_different_outputs():
    torch.manual_seed(0)
    model = create_model("stsun_tiny", categories=CATEGORIES)
    image = _smooth(make_batch(b=4, t=1, c=4, categories=[0, 1], seed=1))
    # One input, two tasks that disagree on about half of the pixels: task 0 reads
    # band 0, task 3 band 1. A network blind to the task scores 0.75 at best on both.
    by_band0 = dataclasses.replace(image, target=(image.image[:, 0, 0] > 0).long()[:, None])
    by_band1 = dataclasses.replace(
        image,
        task=torch.full((4,), 3),
        target=(image.image[:, 0, 1] > 0).long()[:, None],
    )
    disagree = float((by_band0.target != by_band1.target).float().mean())
    assert 0.3 < disagree < 0.7
    _train(model, [by_band0, by_band1], steps=100)
    assert _accuracy(model, by_band0) > 0.9
    assert _accuracy(model, by_band1) > 0.9


def test_a_new_category_is_learnt_as_a_new_row_alone():
    """A name the network never had gets a row; training that row alone predicts it."""
    torch.manual_seed(0)
    model = create_model("stsun_tiny", categories=CATEGORIES)
    batch = _smooth(make_batch(b=4, t=1, c=4, categories=[0, 1, 2], seed=2))
    band0, band1 = batch.image[:, 0, 0], batch.image[:, 0, 1]
    classes = torch.where(band0 < 0, 0, torch.where(band1 < 0, 1, 2))  # (B, H, W)
    batch = dataclasses.replace(batch, target=classes[:, None])
    _train(model, [batch], steps=100)
    assert _accuracy(model, batch) > 0.9
    with torch.no_grad():
        before = model(batch).logits

    n_parameters = sum(p.numel() for p in model.parameters())
    (new,) = model.category_embedding.add(["wetland"])
    row = model.category_embedding.vocabulary.index(new)
    assert row == len(CATEGORIES)  # a row the network never saw, not an existing one
    added = sum(p.numel() for p in model.parameters()) - n_parameters
    assert added == model.category_embedding.dim  # one row; no head, no other parameter
    with torch.no_grad():  # the known rows predict exactly as before
        torch.testing.assert_close(model(batch).logits, before, atol=1e-5, rtol=0)

    # A new class set of four names, in which "wetland" names what class 2 covered: the
    # new row must outscore the trained row 2 there, and nowhere else.
    renamed = dataclasses.replace(
        batch,
        categories=torch.tensor([[0, 1, 2, row]] * 4),
        category_mask=torch.ones(4, 4, dtype=torch.bool),
        target=torch.where(batch.target == 2, 3, batch.target),
    )
    assert _accuracy(model, renamed) < 0.9  # its random row does not know it yet
    rows_before = model.category_embedding.weight.detach().clone()
    model.requires_grad_(False)
    model.category_embedding.weight.requires_grad_(True)
    keep_old_rows = torch.zeros_like(rows_before, dtype=torch.bool)
    keep_old_rows[:row] = True
    model.category_embedding.weight.register_hook(lambda g: g.masked_fill(keep_old_rows, 0.0))
    _train(model, [renamed], steps=60, parameters=[model.category_embedding.weight], lr=0.05)
    assert torch.equal(model.category_embedding.weight[:row], rows_before[:row])
    assert _accuracy(model, renamed) > 0.9
