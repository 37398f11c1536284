"""The STSUN network: any sensor, any time series, any task, any class set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stsun_lightning.batch import Batch
from stsun_lightning.models.decoder import PixelDecoder, Upsampling
from stsun_lightning.models.heads import CategoryHead, ValueHead
from stsun_lightning.models.layers import exporting
from stsun_lightning.models.pyramid import ConvPyramid
from stsun_lightning.models.spatial import (
    ground_position_encoding,
    real_token_origin,
    roll_token_grid,
)
from stsun_lightning.models.spectral import (
    BandEncoder,
    SpectralTokenizer,
    TokenizerMode,
    WavelengthEncoding,
)
from stsun_lightning.models.temporal import DateEncoder, OutputSlots, slot_anchor_weights
from stsun_lightning.models.trunk import SpaceTimeTrunk
from stsun_lightning.models.vocabulary import DEFAULT_TASKS, VocabularyEmbedding

__all__ = ["Stsun", "StsunOutput"]


@dataclass
class StsunOutput:
    """What the network returns.

    Attributes:
        logits: (B, To, K, H', W') when the batch requested categories, else None.
        values: (B, To, V, H', W') when it requested variables or bands, else None.
    """

    logits: Tensor | None = None
    values: Tensor | None = None


class Stsun(nn.Module):
    """Spectral-temporal network for dense prediction over any band set and task.

    Args:
        dim: token width D.
        depth: space-time blocks in all.
        slot_depth: how many of them run on the output slots rather than the input dates
            (default: half). Dates are collapsed into slots half way, so the cost of the
            second half does not grow with T. Slot blocks attend within each slot only,
            so a slot's output does not depend on which other slots were asked for.
        num_heads: attention heads.
        patch_size: patch side p in pixels.
        mlp_ratio: MLP hidden width over D.
        band_dim: width of band embeddings (and of regression-variable embeddings).
        decoder_dim: per-pixel feature width De.
        stem_dim: channels of the full-resolution band mix.
        category_dim: width of category embeddings.
        tokenizer: ``"hypernetwork"`` (cost flat in the number of bands) or ``"attention"``.
        band_context: condition each band's kernel on the frame's whole band set
            (:class:`~stsun_lightning.models.spectral.BandSetContext`).
        wavelength_encoding: ``"response"`` (smooth in wavelength) or ``"fourier"`` (the
            earlier, sharp encoding; the transfer ablation's baseline).
        upsampling: decoder upsampling, ``"unpatch"`` (per-token linear) or ``"bilinear"``
            (mask-normalised, smooth across token borders; slower to learn pixel-level
            routing in the conditioning tests, so not the default).
        window: window side (tokens) of the spatial attention, windowed at every grid
            size (windows shift by half in every second block).
        tasks: task vocabulary, in row order.
        categories: category vocabulary, in row order.
        variables: regression-variable vocabulary, in row order.
        conv_stem: channels of the first stage of an optional strided 3×3 pyramid over
            the full-resolution band mix (:class:`~stsun_lightning.models.pyramid.ConvPyramid`),
            whose last stage is added to the tokens and whose first stage (stride 2)
            to the decoder's pixel features; 0 = off. Needs a power-of-two patch size.
        basis_kernels: each band's tokeniser kernel and stem weights also get a learnt
            map of its spectral response (:meth:`BandEncoder.response`: the response
            integrated against the encoding's basis), which starts at zero. Kernels stay
            smooth in wavelength but are free per spectral region, so red, green, blue and
            near infrared get distinct kernels as soon as training starts: from the band
            embeddings alone they start 99 % alike (a shared modality row and biases
            dominate), and spectral contrasts between them are learnt slowly (measured in
            docs/architecture.md). Needs ``wavelength_encoding="response"`` and the
            hypernetwork tokeniser.
        balanced_band_init: start band embeddings, patch kernels and stem weights from
            what sets each band apart rather than from what all bands share
            (:meth:`BandEncoder.balance_init`, :meth:`SpectralTokenizer.balance_init`,
            :meth:`PixelDecoder.balance_init`). By default red, green, blue and near
            infrared start with embeddings 0.999 alike and kernels within 1 % of their
            mean; balanced, 0.48-0.73 alike and 0.38 of their norm from the mean
            (``stsun_tiny``, ``benchmarks/band_probe.py``). Off by default: it lifts the
            aerial source trained alone, not the joint model (docs/architecture.md).
        dense_refine: full-resolution refinement blocks of the decoder with dense 3×3
            convolutions instead of its depthwise one (:class:`PixelDecoder`); 0 = off.
            Needs ``upsampling="bilinear"``.
        activation_checkpointing: recompute the trunk blocks' activations in the backward
            pass instead of keeping them (:meth:`set_activation_checkpointing`).
        position_jitter_m: in training, every item's positions are shifted by a random
            offset up to this many metres per axis, so a window larger than the training
            patches brings no position code training never saw; 0 = off. With 5 km,
            maps predicted in windows twice the training patch agree with validation
            within 0.007 mIoU, against up to 0.041 without (``benchmarks/agreement.py``).
    """

    def __init__(
        self,
        dim: int = 192,
        depth: int = 6,
        slot_depth: int | None = None,
        num_heads: int = 3,
        patch_size: int = 8,
        mlp_ratio: float = 4.0,
        band_dim: int = 64,
        decoder_dim: int = 32,
        stem_dim: int = 16,
        category_dim: int = 64,
        tokenizer: TokenizerMode = "hypernetwork",
        band_context: bool = True,
        wavelength_encoding: WavelengthEncoding = "response",
        upsampling: Upsampling = "unpatch",
        window: int = 16,
        tasks: Sequence[str] = DEFAULT_TASKS,
        categories: Sequence[str] = (),
        variables: Sequence[str] = (),
        activation_checkpointing: bool = False,
        position_jitter_m: float = 5_000.0,
        conv_stem: int = 0,
        dense_refine: int = 0,
        basis_kernels: bool = False,
        balanced_band_init: bool = False,
    ) -> None:
        super().__init__()
        if position_jitter_m < 0:
            raise ValueError(f"position_jitter_m must be >= 0, got {position_jitter_m}.")
        self.position_jitter_m = position_jitter_m
        self._jitter_generator: torch.Generator | None = None  # None: torch's global one
        self.dim = dim
        self.patch_size = patch_size
        self.band_encoder = BandEncoder(band_dim, encoding=wavelength_encoding)
        if basis_kernels and wavelength_encoding != "response":
            raise ValueError("basis_kernels needs wavelength_encoding='response'.")
        response_dim = self.band_encoder.response_dim if basis_kernels else 0
        self.task_embedding = VocabularyEmbedding(tasks, dim, "task", init_std=1.0)
        self.category_embedding = VocabularyEmbedding(
            categories, category_dim + 1, "category", init_std=1.0
        )
        self.variable_embedding = VocabularyEmbedding(variables, band_dim, "variable", init_std=1.0)
        self.tokenizer = SpectralTokenizer(
            dim,
            patch_size,
            band_dim,
            tokenizer,
            num_heads=max(1, num_heads),
            band_context=band_context,
            response_dim=response_dim,
        )
        self.date_encoder = DateEncoder(dim)
        slot_depth = depth // 2 if slot_depth is None else slot_depth
        if not 0 <= slot_depth <= depth:
            raise ValueError(f"slot_depth must be in [0, depth={depth}], got {slot_depth}.")
        date_depth = depth - slot_depth
        self.date_trunk = SpaceTimeTrunk(dim, date_depth, num_heads, mlp_ratio, window)
        self.output_slots = OutputSlots(dim, num_heads)
        self.slot_trunk = SpaceTimeTrunk(
            dim, slot_depth, num_heads, mlp_ratio, window, first_block=date_depth, temporal=False
        )
        if conv_stem < 0:
            raise ValueError(f"conv_stem must be >= 0 (0 = off), got {conv_stem}.")
        self.conv_stem = ConvPyramid(stem_dim, dim, patch_size, conv_stem) if conv_stem else None
        self.decoder = PixelDecoder(
            dim,
            patch_size,
            band_dim,
            decoder_dim,
            stem_dim,
            upsampling,
            fine_channels=self.conv_stem.fine_channels if self.conv_stem is not None else 0,
            dense_refine=dense_refine,
            response_dim=response_dim,
        )
        self.category_head = CategoryHead(decoder_dim, category_dim)
        self.value_head = ValueHead(decoder_dim, band_dim)
        with torch.no_grad():  # biases start at zero: no class is favoured before training
            self.category_embedding.weight[:, -1].zero_()
        if balanced_band_init:
            self.band_encoder.balance_init()
            self.tokenizer.balance_init()
            self.decoder.balance_init()
        self.set_activation_checkpointing(activation_checkpointing)

    def seed_position_jitter(self, seed: int) -> None:
        """Draw the next training passes' position offsets from a generator seeded by ``seed``.

        A training loop seeds it per step and rank (see ``StsunTask.training_step``), so
        the offsets depend on where the run is, not on what else drew random numbers:
        a run resumed mid-epoch on several ranks draws what the uninterrupted one drew.
        """
        if self._jitter_generator is None:
            self._jitter_generator = torch.Generator()
        self._jitter_generator.manual_seed(seed)

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute (or keep) the activations of every trunk block in training.

        Only each block's input is kept through the forward pass; the backward pass runs
        the block again. Activation memory of the trunk falls to one block's, for about
        one more forward pass of the trunk. Weights and results are unchanged.
        """
        self.date_trunk.activation_checkpointing = enabled
        self.slot_trunk.activation_checkpointing = enabled

    @property
    def tasks(self) -> list[str]:
        """Task vocabulary, in row order."""
        return self.task_embedding.vocabulary.names

    @property
    def basis_kernels(self) -> bool:
        """Whether band kernels also read a learnt map of the band responses."""
        return self.tokenizer.basis_kernel is not None

    @property
    def categories(self) -> list[str]:
        """Category vocabulary, in row order."""
        return self.category_embedding.vocabulary.names

    @property
    def variables(self) -> list[str]:
        """Regression-variable vocabulary, in row order."""
        return self.variable_embedding.vocabulary.names

    def forward(self, batch: Batch, label_size: tuple[int, int] | None = None) -> StsunOutput:
        """Predict.

        Args:
            batch: the batch (see :class:`~stsun_lightning.batch.Batch`).
            label_size: (H', W') of the output grid; default: the target's grid, or the
                image's when the batch has no target.

        Returns:
            :class:`StsunOutput` with ``logits`` (B, To, K, H', W') if the batch asks for
            categories and ``values`` (B, To, V, H', W') if it asks for variables or bands.
        """
        label_size = tuple(label_size) if label_size is not None else batch.label_size()
        b, t, _c, height, width = batch.image.shape
        p = self.patch_size
        frames = batch.observed_frames  # (B, T): a frame without a real band is not real
        image, valid = self._clean_input(batch)
        present = batch.band_mask.any(1)  # (B, C): bands observed at some frame
        wavelength = torch.where(present, batch.wavelength_nm, 0.0)
        bandwidth = torch.where(present, batch.bandwidth_nm, 0.0)
        band_embedding = self.band_encoder(wavelength, bandwidth, batch.modality).to(image.dtype)
        response = (
            self.band_encoder.response(wavelength, bandwidth).to(image.dtype)
            if self.basis_kernels
            else None
        )
        task_embedding = self.task_embedding(batch.task).to(image.dtype)
        # Batches are homogeneous by design: one task means one modulation for all items.
        # An exported graph cannot branch on values: it modulates per item (the same result).
        one_task = not exporting() and bool((batch.task == batch.task[0]).all())
        condition = task_embedding[:1] if one_task else task_embedding

        tokens = self.tokenizer(
            image, band_embedding, batch.band_mask, task_embedding, response
        )  # (B, T, h, w, D)
        h, w = tokens.shape[2:4]
        mixed = self.decoder.stem(
            image, band_embedding, batch.band_mask, response
        )  # (B, T, c0, Hp, Wp)
        fine = None
        if self.conv_stem is not None:
            early, fine = self.conv_stem(mixed.flatten(0, 1), valid.repeat_interleave(t, 0))
            tokens = tokens + early.view(b, t, self.dim, h, w).permute(0, 1, 3, 4, 2)
            fine = fine.view(b, t, *fine.shape[1:])
        token_valid = F.max_pool2d(valid[:, None].float(), p, p)[:, 0].bool()  # (B, h, w)
        # Positions and windows start at the first real token, so padding an image at
        # the top or left by whole patches changes nothing (as at the bottom or right).
        token_grid_valid = token_valid
        origin = real_token_origin(token_valid)
        if not exporting():  # rows and columns as numbers: most items need no roll at all
            origin = [(int(r), int(c)) for r, c in origin.tolist()]
        tokens = roll_token_grid(tokens, origin)
        token_valid = roll_token_grid(token_valid, origin).view(b, h * w)
        offset = None
        if self.training and self.position_jitter_m > 0:
            drawn = torch.rand(b, 2, generator=self._jitter_generator)
            offset = drawn.to(tokens.device) * self.position_jitter_m
        position = ground_position_encoding(h, w, p, batch.gsd_m, self.dim, offset)
        position = position.to(tokens.dtype)
        dates = self.date_encoder(batch.dates).to(tokens.dtype)
        tokens = (
            tokens.reshape(b, t, h * w, self.dim)
            + position[:, None]
            + dates[:, :, None]
            + task_embedding[:, None, None]
        )

        layout = self.date_trunk.layout((h, w), token_valid, frames)
        tokens = self.date_trunk(tokens, condition, layout)

        anchors = slot_anchor_weights(batch.outputs, frames)
        slots = self.output_slots(tokens, batch.outputs, anchors, frames, condition)
        every_slot = torch.ones(b, slots.shape[1], dtype=torch.bool, device=slots.device)
        slots = self.slot_trunk(
            slots, condition, self.slot_trunk.layout((h, w), token_valid, every_slot)
        )
        slots = roll_token_grid(slots.reshape(b, -1, h, w, self.dim), origin, inverse=True)
        features = self.decoder(
            slots,
            image,
            band_embedding,
            batch.band_mask,
            anchors,
            (height, width),
            label_size,
            valid=valid,
            token_valid=token_grid_valid,
            mixed=mixed,
            fine=fine,
        )
        return self._heads(features, batch)

    def _clean_input(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Zero every value that is not real, and pad H, W up to the patch size.

        A value is real where its pixel is valid, its band is observed at its frame and
        its frame is real; every other value (NaN, 0, anything) becomes 0, which the
        tokeniser and the stem read as "absent".

        Returns:
            image (B, T, C, Hp, Wp) and valid (B, Hp, Wp) bool.
        """
        everything_real = batch.valid_mask.all() & batch.band_mask.all() & batch.time_mask.all()
        if not exporting() and bool(everything_real):
            image = torch.nan_to_num(batch.image, nan=0.0, posinf=0.0, neginf=0.0)  # one pass
        else:
            keep = (
                batch.valid_mask[:, None, None]
                & batch.band_mask[..., None, None]
                & batch.time_mask[:, :, None, None, None]
            )
            image = torch.where(keep & torch.isfinite(batch.image), batch.image, 0.0)
        height, width = image.shape[-2:]
        pad_h, pad_w = (-height) % self.patch_size, (-width) % self.patch_size
        valid = batch.valid_mask
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
            valid = F.pad(valid, (0, pad_w, 0, pad_h))
        return image, valid

    def _heads(self, features: Tensor, batch: Batch) -> StsunOutput:
        output = StsunOutput()
        if batch.categories is not None:
            if batch.category_mask is None:
                raise ValueError("Batch asks for categories but has no 'category_mask'.")
            rows = self.category_embedding(batch.categories)
            output.logits = self.category_head(features, rows, batch.category_mask)
        if batch.variables is not None:
            output.values = self.value_head(
                features, self.variable_embedding(batch.variables).to(features.dtype)
            )
        elif batch.target_wavelength_nm is not None:
            if batch.target_bandwidth_nm is None or batch.target_modality is None:
                raise ValueError(
                    "Batch asks for output bands but lacks 'target_bandwidth_nm' or 'target_modality'."
                )
            queries = self.band_encoder(
                batch.target_wavelength_nm, batch.target_bandwidth_nm, batch.target_modality
            )
            output.values = self.value_head(features, queries.to(features.dtype))
        return output
