"""The ``stsun`` command: a LightningCLI over :class:`StsunTask` and any datamodule.

``stsun fit|validate|test|predict --config ...``. DDP, mixed precision, multi-node SLURM,
checkpointing and TensorBoard come from Lightning's Trainer; what the model must know
about the data (its sources: tasks, class names, variables) flows from the datamodule
into the model by ``link_arguments``, never typed twice.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning import LightningDataModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import CheckpointIO

from stsun_lightning.tasks.checkpoint_io import AtomicCheckpointIO
from stsun_lightning.tasks.module import StsunTask

__all__ = [
    "TRAINER_DEFAULTS",
    "FitConfigSaver",
    "StsunCLI",
    "build_cli",
    "main",
    "with_atomic_checkpoints",
]

TRAINER_DEFAULTS: dict[str, Any] = {
    "gradient_clip_val": 1.0,
    # Our batch samplers split batches across DDP ranks themselves.
    "use_distributed_sampler": False,
}


class FitConfigSaver(SaveConfigCallback):
    """Saves the config beside the run's logs and checkpoints, for training runs only.

    ``validate``, ``test`` and ``predict`` create no run folder; saving there would drop a
    ``config.yaml`` into the working directory.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Save the config when fitting."""
        if stage == "fit":
            super().setup(trainer, pl_module, stage)


def with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """Trainer plugins with :class:`AtomicCheckpointIO` added, unless they name a CheckpointIO.

    Args:
        plugins: the ``trainer.plugins`` of a config: None, one plugin or a list.
    """
    listed = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
    if not any(isinstance(plugin, CheckpointIO) for plugin in listed):
        listed.append(AtomicCheckpointIO())
    return listed


class StsunCLI(LightningCLI):
    """LightningCLI that links the datamodule's sources into the model.

    Its trainer writes checkpoints atomically (a preempted save leaves the previous
    ``last.ckpt`` whole), unless the config names a CheckpointIO plugin of its own.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link ``data.sources`` (known once the datamodule exists) to ``model.sources``."""
        parser.link_arguments("data.sources", "model.sources", apply_on="instantiate")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> L.Trainer:
        config["plugins"] = with_atomic_checkpoints(config.get("plugins"))
        return super()._instantiate_trainer(config, callbacks)


def build_cli(args: list[str] | None = None, run: bool = True) -> StsunCLI:
    """Parse ``args``, build trainer, model and datamodule, and run the subcommand.

    Args:
        args: command-line arguments (default: ``sys.argv[1:]``).
        run: whether to run the subcommand (False: only instantiate).

    Returns:
        The CLI object (its ``trainer``, ``model`` and ``datamodule`` are set).
    """
    return StsunCLI(
        StsunTask,
        LightningDataModule,
        subclass_mode_data=True,
        args=args,
        run=run,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_callback=FitConfigSaver,
        save_config_kwargs={"overwrite": True},
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of ``stsun``: ``stsun fit|validate|test|predict --config ...``."""
    build_cli(args)


if __name__ == "__main__":
    main()
