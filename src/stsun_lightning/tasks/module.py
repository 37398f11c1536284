"""The LightningModule: routes each batch by its task to the right loss and metrics.

Under DDP each rank sees batches of other sources, so the keys a rank logs differ from
its neighbours'. Nothing here synchronises per step: evaluation losses and metrics are
accumulated per source and reduced across ranks once, at the end of the epoch, for every
source that any rank saw; training losses are logged as each rank sees them.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from lightning import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from stsun_lightning.batch import Batch
from stsun_lightning.data.sources import SourceInfo, build_vocabularies, parse_sources
from stsun_lightning.data.transforms.band_dropout import drop_random_bands
from stsun_lightning.errors import ConfigError, unknown_name_error
from stsun_lightning.models import StsunOutput, create_model
from stsun_lightning.tasks.losses import category_loss, value_loss
from stsun_lightning.tasks.metrics import SourceMetrics
from stsun_lightning.tasks.panels import panel
from stsun_lightning.tasks.schedule import warmup_cosine

__all__ = ["CHECKPOINT_FORMAT", "StsunTask"]

CHECKPOINT_FORMAT = 1
"""Version of what ``StsunTask`` checkpoints hold beside the state dict."""

log = logging.getLogger(__name__)


class StsunTask(LightningModule):
    """Trains one STSUN network on many sources and tasks at once.

    Each batch comes from one source (one dataset, sensor set and task); its loss is
    cross-entropy over the requested categories or L1 over the requested values.
    Losses are balanced across tasks by dividing each by a running mean of its own
    magnitude (``loss_balance="running_mean"``): every task then contributes steps of
    comparable size, whether its loss is in nats or in metres, and none starves.

    Args:
        model: preset name of the network (see ``stsun_lightning.models.list_models``).
        model_overrides: constructor arguments of the network to override.
        sources: the datamodule's sources, by name (linked from the datamodule by the
            CLI): ``{name: {"task": ..., "categories": [...]} or {"variables": [...]}}``.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to norms, biases and tables).
        warmup_steps: linear warm-up steps before the cosine decay.
        min_lr_ratio: final learning rate over the peak.
        loss_balance: ``"running_mean"`` or ``"none"``.
        balance_momentum: momentum of the running mean of each task's loss.
        max_nonfinite_losses: NaN/inf losses tolerated (each step skipped) before stopping.
        panel_every_n_epochs: log image panels every this many validation epochs (0 = never).
        activation_checkpointing: recompute the trunk blocks' activations in the backward
            pass instead of keeping them (less memory, more compute; see docs/cluster.md).
        compile_model: compile the network with ``torch.compile`` (``nn.Module.compile``:
            the state dict keeps its keys).
        band_dropout: share of training items whose bands are thinned to a random subset
            (:func:`~stsun_lightning.data.transforms.band_dropout.drop_random_bands`); what lets a
            network trained on one sensor read other band sets (measured in
            ``benchmarks/accuracy.py``, experiment 1). 0 turns it off.
        min_bands: the fewest bands band dropout leaves an item.
    """

    def __init__(
        self,
        model: str = "stsun_tiny",
        model_overrides: dict[str, Any] | None = None,
        sources: dict[str, dict[str, Any]] | None = None,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.01,
        loss_balance: Literal["running_mean", "none"] = "running_mean",
        balance_momentum: float = 0.98,
        max_nonfinite_losses: int = 10,
        panel_every_n_epochs: int = 5,
        activation_checkpointing: bool = False,
        compile_model: bool = False,
        band_dropout: float = 0.0,
        min_bands: int = 1,
    ) -> None:
        super().__init__()
        if not 0.0 <= band_dropout <= 1.0 or min_bands < 1:
            raise ConfigError(
                f"band_dropout must be in [0, 1] and min_bands at least 1, got "
                f"band_dropout={band_dropout}, min_bands={min_bands}."
            )
        self.save_hyperparameters()
        self.sources = {s.name: s for s in parse_sources(sources or {})}
        # What the rows of this datamodule's batches mean; the network's vocabularies may
        # differ once a checkpoint trained on other sources is loaded (see ``forward``).
        self.data_vocabularies = build_vocabularies(self.sources.values())
        self.model = create_model(model, **self.data_vocabularies, **(model_overrides or {}))
        self.model.set_activation_checkpointing(activation_checkpointing)
        if compile_model:
            self.model.compile()
        self._row_maps: dict[str, tuple[tuple[str, ...], Tensor | None]] = {}
        self.val_metrics = nn.ModuleDict({n: SourceMetrics(s) for n, s in self.sources.items()})
        self.test_metrics = nn.ModuleDict({n: SourceMetrics(s) for n, s in self.sources.items()})
        self.loss_scale: dict[str, float] = {}
        self.nonfinite_losses = 0
        # Per stage and source: (sum of batch loss × batch size, sum of batch sizes).
        self._eval_losses: dict[str, dict[str, tuple[Tensor, Tensor]]] = {"val": {}, "test": {}}
        self._rng_to_restore: dict[str, Any] | None = None
        self._loader_states_to_restore: list[dict[str, Any]] = []
        # What the training datamodule's reader did (statistics, frame rule), carried in
        # checkpoints so that evaluation and prediction read alike (data.record).
        self.data_record: dict[str, Any] | None = None

    def forward(self, batch: Batch) -> StsunOutput:
        """Run the network on a batch whose rows follow this datamodule's vocabularies."""
        return self.model(self.to_model_rows(batch))

    def setup(self, stage: str) -> None:
        """Take the datamodule's vocabularies (what its batch rows mean), when it has them."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        vocabularies = getattr(datamodule, "vocabularies", None)
        if vocabularies is not None:
            self.data_vocabularies = vocabularies
            self._row_maps = {}
        self._give_data_record(datamodule)

    def _give_data_record(self, datamodule: Any) -> None:
        """Hand a loaded checkpoint's data record to the datamodule, if it takes one."""
        if self.data_record is not None and callable(getattr(datamodule, "load_data_record", None)):
            datamodule.load_data_record(self.data_record)

    def to_model_rows(self, batch: Batch) -> Batch:
        """Translate the batch's task, category and variable rows to the network's rows.

        The datamodule numbers names by its own sources; a checkpoint trained on other
        sources numbers them its own way. Rows are matched by name, so a model predicts
        any subset of what it learnt, in any order.

        Raises:
            UnknownNameError: a name of the datamodule that the network never learnt.
        """
        changes = {}
        for field, kind in (
            ("task", "tasks"),
            ("categories", "categories"),
            ("variables", "variables"),
        ):
            rows = getattr(batch, field)
            lookup = self._row_map(kind) if rows is not None else None
            if lookup is not None:
                changes[field] = lookup.to(rows.device)[rows]
        return dataclasses.replace(batch, **changes) if changes else batch

    def _row_map(self, kind: str) -> Tensor | None:
        """Data row -> network row for one vocabulary, or None where they agree."""
        embedding = {
            "tasks": self.model.task_embedding,
            "categories": self.model.category_embedding,
            "variables": self.model.variable_embedding,
        }[kind]
        names = tuple(embedding.vocabulary.names)
        cached = self._row_maps.get(kind)
        if cached is not None and cached[0] == names:
            return cached[1]
        data_names = self.data_vocabularies[kind]
        lookup = None
        if list(names[: len(data_names)]) != data_names:
            known = set(names)
            for name in data_names:
                if name not in known:
                    raise unknown_name_error(
                        {"tasks": "task", "categories": "category", "variables": "variable"}[kind],
                        name,
                        names,
                        where=f"the datamodule's {'task' if kind == 'tasks' else kind}; the "
                        "network, e.g. from its checkpoint, never learnt it",
                    )
            lookup = torch.tensor([names.index(n) for n in data_names], dtype=torch.long)
        self._row_maps[kind] = (names, lookup)
        return lookup

    def _source(self, batch: Batch) -> SourceInfo:
        name = batch.source[0]
        if name not in self.sources:
            raise unknown_name_error("source", name, self.sources, where="batch.source")
        return self.sources[name]

    @staticmethod
    def _loss(output: StsunOutput, batch: Batch) -> Tensor:
        if batch.target is None:
            raise ValueError(f"Batch from source {batch.source[0]!r} has no target to train on.")
        prediction = output.logits if output.logits is not None else output.values
        # In float32 under mixed precision: autocast would run some reductions in half.
        with torch.autocast(prediction.device.type, enabled=False):
            if output.logits is not None:
                return category_loss(output.logits, batch.target)
            return value_loss(output.values, batch.target)

    def _balanced(self, loss: Tensor, task: str) -> Tensor:
        if self.hparams.loss_balance == "none":
            return loss
        value = float(loss.detach())
        m = self.hparams.balance_momentum
        previous = self.loss_scale.get(task)
        self.loss_scale[task] = value if previous is None else m * previous + (1 - m) * value
        return loss / max(self.loss_scale[task], 1e-6)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """One step on one source's batch; a non-finite loss skips the step."""
        source = self._source(batch)
        batch = drop_random_bands(batch, self.hparams.band_dropout, self.hparams.min_bands)
        loss = self._loss(self(batch), batch)
        if not bool(torch.isfinite(loss)):
            return self._skip_nonfinite(loss, source)
        balanced = self._balanced(loss, source.task)
        size = batch.batch_size
        self.log(f"train/{source.name}/loss", loss, batch_size=size)
        self.log("train/loss", balanced, batch_size=size, prog_bar=True)
        if self._needs_zero_term():
            # Batches of other tasks (or of one date) leave parts of the network unused,
            # which DDP without ``find_unused_parameters`` refuses; a zero-weighted term
            # gives every parameter a gradient instead (see docs/cluster.md).
            balanced = balanced + self._zero_through_every_parameter()
        return balanced

    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def _needs_zero_term(self) -> bool:
        """Under several processes, unless DDP already finds the unused parameters."""
        if not self._distributed():
            return False
        wrapper = self.trainer.strategy.model
        return not (isinstance(wrapper, DistributedDataParallel) and wrapper.find_unused_parameters)

    def _zero_through_every_parameter(self) -> Tensor:
        """0, with a (zero) gradient for every trainable parameter."""
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def _skip_nonfinite(self, loss: Tensor, source: SourceInfo) -> Tensor:
        self.nonfinite_losses += 1
        limit = self.hparams.max_nonfinite_losses
        if self.nonfinite_losses > limit:
            raise RuntimeError(
                f"Stopping: {self.nonfinite_losses} non-finite losses (limit max_nonfinite_losses={limit}); "
                f"the last came from source {source.name!r}. Check its inputs and labels for NaN/inf, "
                "or lower the learning rate."
            )
        log.warning(
            "Non-finite loss (%s) on source %r at step %d: step skipped (%d of at most %d).",
            float(loss),
            source.name,
            self.global_step,
            self.nonfinite_losses,
            limit,
        )
        # A zero that reaches every parameter: all DDP ranks still take part in the step.
        return self._zero_through_every_parameter()

    def _evaluate(
        self, batch: Batch, stage: str, metrics: nn.ModuleDict
    ) -> tuple[StsunOutput, Tensor]:
        source = self._source(batch)
        output = self(batch)
        loss = self._loss(output, batch)
        prediction = output.logits if output.logits is not None else output.values
        metrics[source.name].update(prediction, batch.target)
        size = torch.tensor(float(batch.batch_size), dtype=torch.float64, device=loss.device)
        total, count = self._eval_losses[stage].get(source.name, (0.0, 0.0))
        self._eval_losses[stage][source.name] = (
            total + loss.detach().double() * size,
            count + size,
        )
        return output, loss

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Update the source's metrics; log a panel on the first batch of some epochs."""
        output, loss = self._evaluate(batch, "val", self.val_metrics)
        every = self.hparams.panel_every_n_epochs
        if batch_idx == 0 and every and self.current_epoch % every == 0:
            self._log_panel(batch, output)
        return loss

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Update the source's test metrics."""
        return self._evaluate(batch, "test", self.test_metrics)[1]

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> StsunOutput:
        """The network's raw output."""
        return self(batch)

    def _log_metrics(self, stage: str, metrics: nn.ModuleDict) -> None:
        """Log ``<stage>/<source>/loss`` and the metrics of every source any rank saw.

        One all-reduce gathers which sources each rank saw and their loss sums; the
        metrics' own states are then reduced by torchmetrics on every rank, including
        ranks that saw none of the source (or the collective would wait for them).
        """
        losses = self._eval_losses[stage]
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        rows = []
        for name, source_metrics in metrics.items():
            total, count = losses.get(name, (zero, zero))
            seen = torch.ones_like(zero) if source_metrics.updated else zero
            rows.append(torch.stack([seen, torch.as_tensor(total), torch.as_tensor(count)]))
        if not rows:
            return
        table = torch.stack(rows).to(self.device)
        if self._distributed():
            table = self.trainer.strategy.reduce(table, reduce_op="sum")
        for (name, source_metrics), (seen, total, count) in zip(
            metrics.items(), table.tolist(), strict=True
        ):
            if not seen:
                continue
            with warnings.catch_warnings():
                # A rank that saw no batch of this source still joins the reduction.
                warnings.filterwarnings("ignore", message=".*was called before the ``update``")
                # The values are reduced already: Lightning's advice to sync them is moot.
                warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
                values = source_metrics.compute()
                if count > 0:
                    self.log(f"{stage}/{name}/loss", total / count, sync_dist=False)
                for metric, value in values.items():
                    self.log(f"{stage}/{name}/{metric}", value, sync_dist=False)
            source_metrics.reset()
        self._eval_losses[stage] = {}

    def on_validation_epoch_end(self) -> None:
        """Log ``val/<source>/<metric>`` for every source seen."""
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        """Log ``test/<source>/<metric>`` for every source seen."""
        self._log_metrics("test", self.test_metrics)

    def _log_panel(self, batch: Batch, output: StsunOutput) -> None:
        if not isinstance(self.logger, TensorBoardLogger) or batch.target is None:
            return
        frame = int(batch.time_mask[0].nonzero().max())
        if output.logits is not None:
            target, prediction = batch.target[0, -1], output.logits[0, -1].argmax(0)
        else:
            target, prediction = batch.target[0, -1, 0], output.values[0, -1, 0]
        picture = panel(
            batch.image[0, frame].cpu(),
            batch.wavelength_nm[0].cpu(),
            batch.band_mask[0, frame].cpu(),
            target.cpu(),
            prediction.detach().cpu(),
        )
        self.logger.experiment.add_image(f"panels/{batch.source[0]}", picture, self.global_step)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with linear warm-up and cosine decay to ``min_lr_ratio`` × the peak."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            is_table = name.endswith("embedding.weight") or ".null_key" in name
            (decay if p.dim() >= 2 and not is_table else no_decay).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams.learning_rate,
        )
        total = (
            max(int(self.trainer.estimated_stepping_batches), 1)
            if self._trainer is not None
            else 1000
        )
        warmup = min(self.hparams.warmup_steps, max(total // 10, 1))
        schedule = warmup_cosine(total, warmup, self.hparams.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the loss balance, the random state and the format version with the weights.

        The random state is the writing rank's (rank 0); Lightning itself saves the
        optimiser, the scheduler, the loops' progress and the training loader's position.
        """
        checkpoint["loss_scale"] = dict(self.loss_scale)
        checkpoint["rng_states"] = _rng_states()
        checkpoint["stsun_checkpoint_format"] = CHECKPOINT_FORMAT
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if callable(getattr(datamodule, "data_record", None)):
            checkpoint["stsun_data"] = datamodule.data_record()

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        """Check the format and the network's shapes; restore the loss balance.

        Raises:
            ConfigError: a checkpoint of a newer format, of no STSUN task, or of a network
                of other shapes (naming the first parameters that differ and the presets).
        """
        found = checkpoint.get("stsun_checkpoint_format")
        if found is None or found > CHECKPOINT_FORMAT:
            what = "has no 'stsun_checkpoint_format'" if found is None else f"has format {found}"
            raise ConfigError(
                f"Cannot load this checkpoint: it {what}, and this stsun-lightning reads "
                f"formats up to {CHECKPOINT_FORMAT} written by StsunTask. Load it with the "
                "version that wrote it, or upgrade."
            )
        self._check_shapes(checkpoint)
        self.loss_scale = dict(checkpoint.get("loss_scale", {}))
        self.data_record = checkpoint.get("stsun_data")
        if self._trainer is not None:
            self._give_data_record(self._trainer.datamodule)
        self._rng_to_restore = checkpoint.get("rng_states")
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._loader_states_to_restore = list(
            fit_loop.get("state_dict", {}).get("combined_loader", [])
        )

    def on_train_start(self) -> None:
        """Restore a resumed run's random state and its place in the training epoch.

        Here rather than on load: Lightning draws from the generators while it builds the
        training loader's iterator, which the interrupted run had done before saving; and
        it restores the loader's place itself only when it sets up the training data
        after restoring the loops, not when ``configure_optimizers`` has already asked for
        ``estimated_stepping_batches`` (see
        :class:`~stsun_lightning.data.samplers.sources.ResumableDataLoader`).
        """
        if self._rng_to_restore is not None:
            _set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        states, self._loader_states_to_restore = self._loader_states_to_restore, []
        if states:
            loaders = CombinedLoader(self.trainer.train_dataloader).flattened
            stateful = [d for d in loaders if callable(getattr(d, "load_state_dict", None))]
            if len(stateful) == len(states):
                for loader, state in zip(stateful, states, strict=True):
                    loader.load_state_dict(state)

    def _check_shapes(self, checkpoint: Mapping[str, Any]) -> None:
        """Name the parameters whose shapes differ (vocabulary tables may differ in rows)."""
        own = self.state_dict()
        differ = []
        for name, value in checkpoint.get("state_dict", {}).items():
            if not isinstance(value, Tensor) or name not in own:
                continue
            mine = own[name]
            table = name.endswith("embedding.weight")
            if (table and value.shape[1:] != mine.shape[1:]) or (
                not table and value.shape != mine.shape
            ):
                differ.append(
                    f"{name}: {tuple(value.shape)} in the checkpoint, {tuple(mine.shape)} here"
                )
        if differ:
            hparams = checkpoint.get("hyper_parameters", {})
            trained = (
                f"preset {hparams.get('model', '?')!r}, overrides {hparams.get('model_overrides')}"
            )
            raise ConfigError(
                f"The checkpoint's network ({trained}) has other shapes than this one "
                f"(preset {self.hparams.model!r}, overrides {self.hparams.model_overrides}): "
                + "; ".join(differ[:3])
                + (f"; and {len(differ) - 3} more" if len(differ) > 3 else "")
                + ". Build the task with the checkpoint's preset and overrides."
            )


def _rng_states() -> dict[str, Any]:
    """The global random generators' states (Python, NumPy, torch CPU and CUDA).

    In types that ``torch.load(weights_only=True)`` (Lightning's default) accepts: NumPy's
    key array becomes a tensor.
    """
    name, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.cuda.get_rng_state()
    return states


def _set_rng_states(states: Mapping[str, Any]) -> None:
    """Set the generators saved by :func:`_rng_states` (those present)."""
    if "python" in states:
        random.setstate(states["python"])
    if "numpy" in states:
        name, keys, position, has_gauss, gauss = states["numpy"]
        keys = np.asarray(keys.numpy() if isinstance(keys, Tensor) else keys).astype(np.uint32)
        np.random.set_state((name, keys, position, has_gauss, gauss))
    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["torch_cuda"].cpu())
