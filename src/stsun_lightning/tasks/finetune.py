"""The fine-tuning hooks of ``StsunTask``: a run that starts from another run's weights.

What the options of :class:`~stsun_lightning.tasks.module.StsunTask` (``init_from``,
``init_categories``, ``imprint_batches``, ``freeze``, ``known_categories_lr``, ``lora``)
do, in the order Lightning runs it:

1. ``setup("fit")``: the checkpoint's network weights are loaded with merged
   vocabularies (:mod:`~stsun_lightning.tasks.init_from`), the named parts frozen
   (:mod:`~stsun_lightning.tasks.parts`), the trunk's layers given LoRA adapters
   (:mod:`~stsun_lightning.tasks.lora`). Lightning restores ``--ckpt_path`` after this, so
   a resumed run's own weights replace those of ``init_from``.
2. ``configure_optimizers``: the frozen parameters are left out (they need no gradient);
   known category rows slowed down where asked.
3. ``on_fit_start``: new category rows initialised (:mod:`~stsun_lightning.tasks.imprint`),
   unless the run resumes.
4. ``on_fit_end``: the adapters merged into plain weights.

Outside fit, a name that a loaded checkpoint never learnt (a row the merge added) is
refused rather than predicted from a random row.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from stsun_lightning.models import Stsun
from stsun_lightning.tasks.imprint import PixelFeatureMeans, imprint_rows, rows_from_categories
from stsun_lightning.tasks.init_from import describe_merges, load_initial_weights
from stsun_lightning.tasks.lora import LoraOptions, add_lora, merge_lora
from stsun_lightning.tasks.parts import freeze_parts, frozen_modules
from stsun_lightning.tasks.rows import unlearnt_name_error

__all__ = ["FineTuning"]


class FineTuning:
    """Mixin of ``StsunTask`` (before ``LightningModule`` in its bases); see the module."""

    model: Stsun
    hparams: Any
    lora: LoraOptions | None
    new_categories: list[str]
    _prepared_for_fit: bool
    _resumed: bool
    _frozen: list[torch.nn.Module]

    def _prepare_fine_tuning(self) -> None:
        """Initial weights, frozen parts and adapters, before a resumed state is loaded.

        Lightning restores ``--ckpt_path`` after ``setup``, so a resumed run's weights
        replace those of ``init_from``.
        """
        self._prepared_for_fit = True
        hparams = self.hparams
        if hparams.init_from:
            merges = load_initial_weights(self.model, hparams.init_from, hparams)
            rank_zero_info(describe_merges(hparams.init_from, merges))
            categories = merges.get("category_embedding")
            self.new_categories = list(categories.new) if categories is not None else []
        frozen = freeze_parts(self.model, hparams.freeze or [])
        self._frozen = frozen_modules(self.model, frozen)
        if self.lora is not None:
            add_lora(self.model, self.lora)
        self.train(self.training)

    def on_fit_start(self) -> None:
        """Give the new category rows their first values (not when resuming)."""
        if self.new_categories and not self._resumed:
            self._initialise_new_rows()
        for table in (
            self.model.category_embedding,
            self.model.task_embedding,
            self.model.variable_embedding,
        ):
            table.mark_learnt()

    def _initialise_new_rows(self) -> None:
        """Rows from named categories, or imprinted from the first labelled pixels."""
        named = rows_from_categories(
            self.model, self.hparams.init_categories or {}, self.new_categories
        )
        rest = [n for n in self.new_categories if n not in named]
        if rest:
            means = self._mean_pixel_features(rest)
            imprint_rows(
                self.model,
                means,
                [n for n in self.model.categories if n not in self.new_categories],
            )
            unseen = [n for n in rest if n not in means]
            if unseen:
                rank_zero_warn(
                    f"No labelled pixels of {', '.join(unseen)} in the first "
                    f"{self.hparams.imprint_batches} training batches: their rows start at random."
                )
            named += list(means)
        rank_zero_info(f"New category rows initialised: {', '.join(named) or 'none'}.")

    def _mean_pixel_features(self, names: list[str]) -> dict[str, Tensor]:
        """Mean unit pixel feature of each category over the first training batches."""
        datamodule = self._datamodule()
        loader = (
            datamodule.train_dataloader()
            if datamodule is not None
            else self.trainer.train_dataloader
        )
        means = PixelFeatureMeans(self.model, names)
        was_training = self.model.training
        self.model.eval()
        try:
            for count, batch in enumerate(loader):
                if count >= self.hparams.imprint_batches or means.complete(min_pixels=256):
                    break
                means.add(self.to_model_rows(batch.to(self.device)))
        finally:
            self.model.train(was_training)
            self.train(self.training)
        if self._distributed():
            means.reduce(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        return means.means()

    def train(self, mode: bool = True) -> Any:
        """Set the training mode; frozen parts stay in eval mode (dropout, norms)."""
        super().train(mode)  # type: ignore[misc]
        for module in getattr(self, "_frozen", []):
            module.eval()
        return self

    def on_fit_end(self) -> None:
        """Merge the adapters into plain weights: the network needs no ``peft`` from here."""
        if self.lora is not None:
            merged = merge_lora(self.model)
            if merged:
                rank_zero_info(f"Merged the LoRA adapters of {len(merged)} trunk layers.")

    def _refuse_unlearnt_names(self) -> None:
        """Outside fit, a name the network never learnt is an error, not a random row."""
        if self._trainer is None or self.trainer.state.fn == TrainerFn.FITTING:
            return
        for table, kind in (
            (self.model.category_embedding, "categories"),
            (self.model.task_embedding, "tasks"),
            (self.model.variable_embedding, "variables"),
        ):
            wanted = set(self.data_vocabularies.get(kind, []))
            for name in table.unlearnt:
                if name in wanted:
                    learnt = [n for n in table.vocabulary if n not in set(table.unlearnt)]
                    raise unlearnt_name_error(table.vocabulary.kind, name, learnt, kind)

    def on_validation_start(self) -> None:
        """Refuse names the network never learnt (outside fit)."""
        self._refuse_unlearnt_names()

    def on_test_start(self) -> None:
        """Refuse names the network never learnt."""
        self._refuse_unlearnt_names()

    def on_predict_start(self) -> None:
        """Refuse names the network never learnt."""
        self._refuse_unlearnt_names()
