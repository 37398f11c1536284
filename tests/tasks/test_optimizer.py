"""Weight decay applies to the weights of linear and convolutional layers, nothing else."""

import torch
from example_data import SOURCES

from stsun_lightning.tasks.module import StsunTask
from stsun_lightning.tasks.optimizer import decayed_parameters


def test_tables_norms_biases_and_scales_get_no_weight_decay():
    task = StsunTask("stsun_tiny", sources=SOURCES, weight_decay=0.05)
    decayed = set(decayed_parameters(task))
    names = {n for n, _ in task.named_parameters()}
    not_decayed = names - decayed
    assert {n for n in not_decayed if not n.endswith(".bias") and ".norm" not in n} == {
        "model.band_encoder.modality.weight",
        "model.task_embedding.weight",
        "model.category_embedding.weight",
        "model.variable_embedding.weight",
        "model.date_encoder.unknown",
        "model.date_trunk.blocks.0.time_attention.null_key",
        "model.output_slots.kind.weight",
        "model.output_slots.attention.null_key",
        "model.category_head.log_scale",
    }
    assert {
        "model.band_encoder.mlp.0.weight",
        "model.tokenizer.kernel.weight",
        "model.date_trunk.blocks.0.space_attention.qkv.weight",
        "model.date_trunk.blocks.0.modulation.linear.weight",
        "model.decoder.depthwise.weight",
        "model.category_head.proj.weight",
    } <= decayed
    assert all(n.endswith(".weight") and ".norm" not in n for n in decayed)

    optimizer = task.configure_optimizers()["optimizer"]
    parameters = dict(task.named_parameters())
    with_decay, without = optimizer.param_groups
    assert with_decay["weight_decay"] == 0.05 and without["weight_decay"] == 0.0
    assert {id(p) for p in with_decay["params"]} == {id(parameters[n]) for n in decayed}
    assert {id(p) for p in without["params"]} == {id(parameters[n]) for n in not_decayed}


def test_frozen_parameters_are_left_out():
    task = StsunTask("stsun_tiny", sources=SOURCES)
    task.model.band_encoder.requires_grad_(False)
    decayed = decayed_parameters(task)
    assert not any(n.startswith("model.band_encoder.") for n in decayed)
    groups = task.configure_optimizers()["optimizer"].param_groups
    trained = {id(p) for g in groups for p in g["params"]}
    assert all(id(p) not in trained for p in task.model.band_encoder.parameters())
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in task.parameters())
    assert isinstance(groups[0]["params"][0], torch.nn.Parameter)
