"""The LightningModule: routes each batch by its task to the right loss and metrics.

It reads top to bottom as TorchGeo's ``BaseTask`` does: the constructor calls
``configure_models``, ``configure_losses`` and ``configure_metrics``; then come the steps,
the optimiser and what a checkpoint carries. Each concern lives in a module of its own:
``rows`` (batch rows to network rows), ``losses``, ``balance`` (the loss balance across
tasks), ``nonfinite`` (skipping a step on every rank), ``evaluation`` and ``metrics``,
``panels``, ``optimizer``, ``state`` (checkpoint contents and checks), and for a run that
starts from another's weights ``init_from``, ``imprint``, ``parts`` (freezing) and ``lora``.

Under DDP the ranks agree once per training step (one all-reduce of a few numbers) on
whether to skip it and on the loss balance's measurements; evaluation is reduced once per
epoch (see :mod:`~stsun_lightning.tasks.evaluation`). Training losses are logged as each
rank sees them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

import torch
from lightning import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from stsun_lightning.batch import Batch
from stsun_lightning.data.sources import SourceInfo, build_vocabularies, parse_sources
from stsun_lightning.data.transforms.band_dropout import drop_random_bands
from stsun_lightning.errors import ConfigError, unknown_name_error
from stsun_lightning.export.onnx import OnnxModel
from stsun_lightning.export.predict import physical_record, predict_exported
from stsun_lightning.models import StsunOutput, create_model
from stsun_lightning.tasks.balance import LossBalance
from stsun_lightning.tasks.evaluation import SourceEvaluation
from stsun_lightning.tasks.finetune import FineTuning
from stsun_lightning.tasks.init_from import NETWORK_PREFIX
from stsun_lightning.tasks.lora import (
    LORA_STATE_KEY,
    LoraOptions,
    lora_layers,
    lora_state_to_plain,
    plain_state_to_lora,
)
from stsun_lightning.tasks.losses import batch_loss
from stsun_lightning.tasks.nonfinite import NonFiniteSkips, drop_gradients, zero_through_parameters
from stsun_lightning.tasks.optimizer import adamw_with_schedule
from stsun_lightning.tasks.panels import batch_panel
from stsun_lightning.tasks.parts import KnownRowsRate
from stsun_lightning.tasks.rows import RowMap
from stsun_lightning.tasks.state import (
    CHECKPOINT_FORMAT,
    check_format,
    check_shapes,
    restore_loader_states,
    rng_states,
    set_rng_states,
)

__all__ = ["CHECKPOINT_FORMAT", "StsunTask"]


class StsunTask(FineTuning, LightningModule):
    """Trains one STSUN network on many sources and tasks at once.

    Each batch comes from one source (one dataset, sensor set and task); its loss is
    cross-entropy over the requested categories or L1 over the requested values, optionally
    divided by its task's normaliser (:mod:`~stsun_lightning.tasks.balance`), so that the
    sum does not depend on the tasks' units. A step whose loss is not finite on any rank is skipped
    on every rank, moving nothing (:mod:`~stsun_lightning.tasks.nonfinite`).

    Args:
        model: preset name of the network (see ``stsun_lightning.models.list_models``).
        model_overrides: constructor arguments of the network to override.
        sources: the datamodule's sources, by name (linked from the datamodule by the
            CLI): ``{name: {"task": ..., "categories": [...]} or {"variables": [...]}}``.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay of the weights of linear and convolutional layers
            (not of norms, biases, scales and tables; see
            :func:`~stsun_lightning.tasks.optimizer.decayed_parameters`).
        warmup_steps: linear warm-up steps before the cosine decay.
        min_lr_ratio: final learning rate over the peak.
        loss_balance: ``"none"`` (the raw sum: the default, measured better on the demo,
            see docs/architecture.md) or ``"initial_mean"`` (each task's loss over its mean
            on its first ``balance_batches`` labelled batches, then frozen: a sum that does
            not depend on the tasks' units).
        balance_batches: labelled batches of a task (over all ranks) that measure its
            normaliser.
        max_nonfinite_losses: steps with a NaN/inf loss tolerated (each skipped on every
            rank) before the run stops.
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
        init_from: a ``StsunTask`` checkpoint whose network weights start this run (a new
            run: fresh optimiser, schedule and data record; ``--ckpt_path`` resumes a run
            instead, and wins over this). Vocabularies merge: the checkpoint's names keep
            their rows, this run's other names get new rows; the run logs both lists.
            The network must have the checkpoint's shapes (same preset and overrides).
        init_categories: new category -> known categories whose mean row it starts from
            (``{glacier: [snow_ice]}``); the other new categories start from the mean
            pixel feature of their first labelled pixels (imprinting, see
            :mod:`~stsun_lightning.tasks.imprint`).
        imprint_batches: most training batches read to imprint new categories.
        freeze: parts of the network that do not train (see
            :data:`~stsun_lightning.tasks.parts.PARTS`: ``band_encoder``, ``tokenizer``,
            ``date_encoder``, ``trunk``, ``decoder``, ``heads``, ``tasks``, ``variables``,
            ``categories``; ``backbone`` = the first five); they run in eval mode.
        known_categories_lr: learning rate of the known category rows (with their biases)
            and the head's cosine scale, over the run's; new rows learn at the full rate.
        lora: low-rank adaptation of the trunk's linear layers, ``{rank: 8, alpha: 16}``
            (needs ``peft``); the trunk's own weights are frozen, the adapters merged back
            at the end of fit and in every checkpoint (see :mod:`~stsun_lightning.tasks.lora`).
        onnx: an exported file (``stsun export``) to predict with instead of the network,
            through onnxruntime (``stsun predict --model.onnx model.onnx``, no
            ``ckpt_path``): the datamodule then reads physical values, which the file
            normalises with the statistics fixed inside it (see
            :mod:`~stsun_lightning.export.predict`). Prediction only.
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
        loss_balance: Literal["initial_mean", "none"] = "none",
        balance_batches: int = 20,
        max_nonfinite_losses: int = 10,
        panel_every_n_epochs: int = 5,
        activation_checkpointing: bool = False,
        compile_model: bool = False,
        band_dropout: float = 0.0,
        min_bands: int = 1,
        init_from: str | None = None,
        init_categories: dict[str, list[str]] | None = None,
        imprint_batches: int = 16,
        freeze: list[str] | None = None,
        known_categories_lr: float = 1.0,
        lora: dict[str, int | float] | None = None,
        onnx: str | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= band_dropout <= 1.0 or min_bands < 1:
            raise ConfigError(
                f"band_dropout must be in [0, 1] and min_bands at least 1, got "
                f"band_dropout={band_dropout}, min_bands={min_bands}."
            )
        self.lora = LoraOptions.parse(lora) if lora is not None else None
        if not 0.0 <= known_categories_lr <= 1.0:
            raise ConfigError(
                f"model.known_categories_lr must be in [0, 1], got {known_categories_lr}."
            )
        self.save_hyperparameters()
        self.sources = {s.name: s for s in parse_sources(sources or {})}
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()
        # The datamodule's record of what its reader did, from a checkpoint (see ``state``).
        self.data_record: Any = None
        self._rng_to_restore: Mapping[str, Any] | None = None
        self._loader_states_to_restore: list[dict[str, Any]] = []
        # Fine-tuning: names the init checkpoint lacked, whether this fit resumes a run.
        self.new_categories: list[str] = []
        self._prepared_for_fit = False
        self._resumed = False
        self._frozen: list[torch.nn.Module] = []
        self.exported: OnnxModel | None = None
        if onnx is not None:
            self.exported = OnnxModel(onnx)
            self.data_record = physical_record(self.exported.metadata)
            # The written maps name the exported weights, not this module's.
            self.weights_fingerprint = self.exported.metadata["model"]

    def configure_models(self) -> None:
        """The network, with vocabularies covering the sources, and the row translation."""
        vocabularies = build_vocabularies(self.sources.values())
        # What the rows of the datamodule's batches mean; the network's vocabularies may
        # differ once a checkpoint trained on other sources is loaded.
        self.rows = RowMap(vocabularies)
        hparams = self.hparams
        self.model = create_model(hparams.model, **vocabularies, **(hparams.model_overrides or {}))
        self.model.set_activation_checkpointing(hparams.activation_checkpointing)
        if hparams.compile_model:
            self.model.compile()

    def configure_losses(self) -> None:
        """The loss balance across tasks and the non-finite-loss guard."""
        tasks = {source.task for source in self.sources.values()}
        self.balance = LossBalance(tasks, self.hparams.loss_balance, self.hparams.balance_batches)
        self.nonfinite = NonFiniteSkips(self.hparams.max_nonfinite_losses)

    def configure_metrics(self) -> None:
        """Validation and test scores per source."""
        self.val_metrics = SourceEvaluation(self.sources)
        self.test_metrics = SourceEvaluation(self.sources)

    @property
    def data_vocabularies(self) -> dict[str, list[str]]:
        """What the rows of the datamodule's batches mean (``tasks``, ``categories``, ...)."""
        return self.rows.data_vocabularies

    def forward(self, batch: Batch) -> StsunOutput:
        """Run the network on a batch whose rows follow this datamodule's vocabularies."""
        if self.exported is not None:
            return predict_exported(self.exported, batch, self.data_vocabularies)
        return self.model(self.to_model_rows(batch))

    def to_model_rows(self, batch: Batch) -> Batch:
        """The batch with its rows translated to the network's (see :class:`RowMap`)."""
        return self.rows(batch, self.model)

    def setup(self, stage: str) -> None:
        """Take the datamodule's vocabularies, and give it the checkpoint's data record.

        Lightning runs this after ``datamodule.setup`` and before it asks for any loader.
        """
        datamodule = self._datamodule()
        vocabularies = getattr(datamodule, "vocabularies", None)
        if vocabularies is not None:
            self.rows = RowMap(vocabularies)
        if self.data_record is not None:
            _give_data_record(datamodule, self.data_record)
        if stage == "fit" and not self._prepared_for_fit:
            self._prepare_fine_tuning()

    # --- training ------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """One step on one source's batch; a non-finite loss on any rank skips it everywhere."""
        source = self._source(batch)
        batch = drop_random_bands(batch, self.hparams.band_dropout, self.hparams.min_bands)
        # Position offsets from (seed, step, rank): the same after a resume on every rank.
        step_seed = (torch.initial_seed() * 1_000_003 + self.global_step) * 1_009
        self.model.seed_position_jitter((step_seed + self.global_rank) % 2**63)
        loss = batch_loss(self(batch), batch)
        finite = bool(torch.isfinite(loss.value))
        measured = float(loss.value.detach()) if finite and loss.labelled else None
        nonfinite_ranks, balance_totals = self._agree(not finite, source.task, measured)
        if nonfinite_ranks:
            own = None if finite else loss.value
            self.nonfinite.skip(self.global_step, nonfinite_ranks, own, source.name)
            # Every rank still runs its backward pass (DDP needs it); the gradients are
            # dropped before the optimiser runs (``on_before_optimizer_step``).
            return zero_through_parameters(self)
        self.balance.add(balance_totals)
        balanced = self.balance(loss.value, source.task)
        size = batch.batch_size
        self.log(f"train/{source.name}/loss", loss.value, batch_size=size)
        self.log("train/loss", balanced, batch_size=size, prog_bar=True)
        if self._needs_zero_term():
            # Batches of other tasks (or of one date) leave parts of the network unused,
            # which DDP without ``find_unused_parameters`` refuses; a zero-weighted term
            # gives every parameter a gradient instead (see docs/cluster.md).
            balanced = balanced + zero_through_parameters(self)
        return balanced

    def _agree(self, nonfinite: bool, task: str, measured: float | None) -> tuple[int, Tensor]:
        """Sum over ranks: how many saw a non-finite loss, and the loss balance's reports."""
        report = torch.cat(
            [
                torch.tensor([float(nonfinite)], device=self.device),
                self.balance.report(task, measured, self.device),
            ]
        )
        if self._distributed():
            report = self.trainer.strategy.reduce(report, reduce_op="sum")
        return round(float(report[0])), report[1:]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the gradients of a skipped step, so the optimiser changes nothing."""
        if self.nonfinite.skips(self.global_step):
            drop_gradients(optimizer)

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        """Advance the schedule, except after a skipped step."""
        # Lightning counts the step as done before it steps the schedulers.
        if not self.nonfinite.skips(self.global_step - 1):
            super().lr_scheduler_step(scheduler, metric)

    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def _needs_zero_term(self) -> bool:
        """Under several processes, unless DDP already finds the unused parameters."""
        if not self._distributed():
            return False
        wrapper = self.trainer.strategy.model
        return not (isinstance(wrapper, DistributedDataParallel) and wrapper.find_unused_parameters)

    # --- evaluation ----------------------------------------------------------------------

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Update the source's metrics; log a panel on the first batch of some epochs."""
        output, loss = self._evaluate(batch, self.val_metrics)
        every = self.hparams.panel_every_n_epochs
        if batch_idx == 0 and every and self.current_epoch % every == 0:
            self._log_panel(batch, output)
        return loss

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Update the source's test metrics."""
        return self._evaluate(batch, self.test_metrics)[1]

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> StsunOutput:
        """The network's raw output."""
        return self(batch)

    def on_validation_epoch_end(self) -> None:
        """Log ``val/<source>/<metric>`` for every source any rank saw."""
        self._log_scores("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        """Log ``test/<source>/<metric>`` for every source any rank saw."""
        self._log_scores("test", self.test_metrics)

    def _evaluate(self, batch: Batch, evaluation: SourceEvaluation) -> tuple[StsunOutput, Tensor]:
        source = self._source(batch)
        output = self(batch)
        loss = batch_loss(output, batch).value
        prediction = output.logits if output.logits is not None else output.values
        assert prediction is not None and batch.target is not None
        evaluation.update(source.name, prediction, batch.target, loss)
        return output, loss

    def _log_scores(self, stage: str, evaluation: SourceEvaluation) -> None:
        reduce = None
        if self._distributed():
            strategy = self.trainer.strategy
            reduce = lambda table: strategy.reduce(table, reduce_op="sum")  # noqa: E731
        scores = evaluation.compute(self.device, reduce)
        with warnings.catch_warnings():
            # The values are reduced already: Lightning's advice to sync them is moot.
            warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
            for key, value in scores.items():
                self.log(f"{stage}/{key}", value, sync_dist=False)

    def _log_panel(self, batch: Batch, output: StsunOutput) -> None:
        if not isinstance(self.logger, TensorBoardLogger):
            return
        picture = batch_panel(batch, output)
        if picture is not None:
            self.logger.experiment.add_image(f"panels/{batch.source[0]}", picture, self.global_step)

    def _source(self, batch: Batch) -> SourceInfo:
        name = batch.source[0]
        if name not in self.sources:
            raise unknown_name_error("source", name, self.sources, where="batch.source")
        return self.sources[name]

    # --- optimiser -----------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with linear warm-up and cosine decay to ``min_lr_ratio`` × the peak."""
        total = (
            max(int(self.trainer.estimated_stepping_batches), 1)
            if self._trainer is not None
            else 1000
        )
        optimizer, scheduler = adamw_with_schedule(
            self,
            learning_rate=self.hparams.learning_rate,
            weight_decay=self.hparams.weight_decay,
            total_steps=total,
            warmup_steps=min(self.hparams.warmup_steps, max(total // 10, 1)),
            min_lr_ratio=self.hparams.min_lr_ratio,
        )
        known = [n for n in self.model.categories if n not in set(self.new_categories)]
        KnownRowsRate(self.model, known, self.hparams.known_categories_lr).attach(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # --- checkpoints ---------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the format, loss balance, skip count, random state and data record.

        The random state is the writing rank's (rank 0); Lightning itself saves the
        optimiser, the scheduler, the loops' progress and the training loader's position.
        """
        checkpoint["stsun_checkpoint_format"] = CHECKPOINT_FORMAT
        checkpoint["loss_balance"] = self.balance.state_dict()
        checkpoint["nonfinite_steps"] = self.nonfinite.state_dict()
        checkpoint["rng_states"] = rng_states()
        data_record = getattr(self._datamodule(), "data_record", None)
        record = data_record() if callable(data_record) else None
        if record is not None:
            checkpoint["stsun_data"] = record
        if self.lora is not None and lora_layers(self.model):
            # Plain weights under the ordinary keys (no peft needed to load them); the
            # adapters beside them, for resuming.
            checkpoint[LORA_STATE_KEY] = lora_state_to_plain(
                checkpoint["state_dict"], self.model, NETWORK_PREFIX
            )

    def on_load_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        """Check the format and the network's shapes; restore the training state.

        The data record goes to the attached datamodule now (``trainer.predict(...,
        ckpt_path=...)`` restores after ``setup``), or in ``setup`` when the task was loaded
        before it met a trainer (``StsunTask.load_from_checkpoint``).

        Raises:
            ConfigError: a checkpoint of a newer format, of no STSUN task, or of a network
                of other shapes (naming the first parameters that differ and the presets);
                a checkpoint for a task that predicts with an exported file.
        """
        if self.exported is not None:
            raise ConfigError(
                f"model.onnx ({self.exported.path}) predicts with the exported file's weights "
                "and statistics: give ckpt_path or model.onnx, not both."
            )
        check_format(checkpoint)
        if self.lora is not None and lora_layers(self.model) and "state_dict" in checkpoint:
            plain_state_to_lora(
                checkpoint["state_dict"],  # type: ignore[arg-type]
                self.model,
                NETWORK_PREFIX,
                checkpoint.get(LORA_STATE_KEY),
            )
        check_shapes(self.state_dict(), checkpoint, self.hparams)
        self.balance.load_state_dict(checkpoint.get("loss_balance", {}))
        self.nonfinite.load_state_dict(checkpoint.get("nonfinite_steps", {}))
        self._rng_to_restore = checkpoint.get("rng_states")
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._loader_states_to_restore = list(
            fit_loop.get("state_dict", {}).get("combined_loader", [])
        )
        self.data_record = checkpoint.get("stsun_data")
        if self.data_record is not None:
            _give_data_record(self._datamodule(), self.data_record)
        # A fit restored from a checkpoint resumes: its rows are not initialised again.
        self._resumed = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING

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
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        states, self._loader_states_to_restore = self._loader_states_to_restore, []
        if states:
            restore_loader_states(self.trainer.train_dataloader, states)

    def _datamodule(self) -> Any:
        return self._trainer.datamodule if self._trainer is not None else None


def _give_data_record(datamodule: Any, record: Any) -> None:
    """Hand a checkpoint's data record to a datamodule that takes one."""
    load = getattr(datamodule, "load_data_record", None)
    if callable(load):
        load(record)
