"""Mixed precision keeps the sensitive parts in float32; checkpointing changes no result."""

import random

import numpy as np
import torch
import torch.nn.functional as F

from conftest import CATEGORIES, make_batch
from stsun_lightning.models import create_model
from stsun_lightning.tasks.losses import category_loss
from stsun_lightning.tasks.module import StsunTask


def test_heads_run_in_float32_under_bf16_autocast(tiny_model):
    batch = make_batch(t=1, categories=[0, 1, 2])
    features = torch.randn(2, 1, 16, 32, 32).to(torch.bfloat16)
    head = tiny_model.category_head
    rows = tiny_model.category_embedding(batch.categories)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head(features, rows, batch.category_mask)
        values = tiny_model.value_head(features, torch.randn(2, 1, 32))
        output = tiny_model(batch)
    assert mixed.dtype == values.dtype == output.logits.dtype == torch.float32
    exact = head(features.float(), rows, batch.category_mask)  # float32, no autocast
    torch.testing.assert_close(mixed, exact, rtol=0, atol=0)


def test_bf16_logits_stay_close_to_float32(tiny_model):
    batch = make_batch(t=2, categories=[0, 1, 2, 3])
    with torch.no_grad():
        reference = tiny_model(batch).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = tiny_model(batch).logits
    requested = reference > -1e3
    assert float((mixed - reference)[requested].abs().max()) < 0.1
    loss_gap = category_loss(mixed, batch.target) - category_loss(reference, batch.target)
    assert abs(float(loss_gap)) < 1e-2


def test_attention_softmax_accumulates_in_float32_for_bf16_inputs():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 512, 16).to(torch.bfloat16) for _ in range(3))
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    fused = F.scaled_dot_product_attention(q, k, v).double()
    in_bf16 = (((q @ k.transpose(-1, -2)) * 16**-0.5).softmax(-1) @ v).double()
    fused_error = float((fused - exact).abs().max())
    assert fused_error <= float(exact.abs().max()) * 2**-7  # within a bf16 rounding
    assert fused_error < float((in_bf16 - exact).abs().max()) / 2


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = create_model("stsun_tiny", categories=CATEGORIES).train()
    batch = make_batch(t=3, categories=[0, 1, 2])

    def gradients(enabled: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.set_activation_checkpointing(enabled)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same position jitter in both passes
        loss = category_loss(model(batch).logits, batch.target)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads

    loss, grads = gradients(False)
    loss_checkpointed, grads_checkpointed = gradients(True)
    torch.testing.assert_close(loss_checkpointed, loss)
    assert grads_checkpointed.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_checkpointed[name], grad, msg=name)


def test_the_task_options_reach_the_network():
    sources = {"test": {"task": "semantic_segmentation", "categories": ["water", "cropland"]}}
    task = StsunTask("stsun_tiny", sources=sources, activation_checkpointing=True)
    assert task.model.date_trunk.activation_checkpointing
    assert task.model.slot_trunk.activation_checkpointing
    assert not StsunTask("stsun_tiny", sources=sources).model.date_trunk.activation_checkpointing


def test_a_checkpoint_carries_the_random_state_to_the_start_of_training():
    sources = {"test": {"task": "semantic_segmentation", "categories": ["water", "cropland"]}}
    task = StsunTask("stsun_tiny", sources=sources)
    checkpoint = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(checkpoint)
    drawn = (random.random(), float(np.random.rand()), float(torch.rand(())))
    other = StsunTask("stsun_tiny", sources=sources)
    other.on_load_checkpoint(checkpoint)
    torch.rand(5)  # Lightning draws while it sets up the loaders, before training starts
    other.on_train_start()
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == drawn
