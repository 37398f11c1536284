"""The ``stsun`` command: a LightningCLI over :class:`StsunTask` and any datamodule.

``stsun fit|validate|test|predict --config ...``, and ``stsun export`` (a checkpoint to
ONNX, :mod:`stsun_lightning.export`). DDP, mixed precision, multi-node SLURM,
checkpointing and TensorBoard come from Lightning's Trainer; what the model must know
about the data (its sources: tasks, class names, variables) flows from the datamodule
into the model by ``link_arguments``, never typed twice.

A person's mistake (a :class:`~stsun_lightning.errors.ConfigError`: an unknown sensor,
band, category or task, a missing or corrupt file, a key or value the config does not
accept) ends the output as one paragraph, ``error: <what, where, closest choice>``, with
exit status 2 and no traceback, whichever stage found it: parsing, building the classes,
or running. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import lightning as L
from lightning import LightningDataModule
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from stsun_lightning.cli_errors import (
    check_ckpt_path,
    command_line_error,
    config_error_in,
    parse_error_message,
    person_message,
)
from stsun_lightning.data.datamodules.prediction import ScenePredictionMixin
from stsun_lightning.errors import ConfigError
from stsun_lightning.predict.callback import GeoTiffPredictionWriter
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

    Its errors for a person are :class:`~stsun_lightning.errors.ConfigError`, unwrapped:
    parse errors (jsonargparse would print the usage and exit), errors of building the
    datamodule, model and callbacks (jsonargparse wraps them in its union error) and a
    ``ckpt_path`` that names no checkpoint.

    Its trainer writes checkpoints atomically (a preempted save leaves the previous
    ``last.ckpt`` whole), unless the config names a CheckpointIO plugin of its own.
    """

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """A parser that raises its errors instead of printing the usage and exiting."""
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link ``data.sources`` (known once the datamodule exists) to ``model.sources``."""
        parser.link_arguments("data.sources", "model.sources", apply_on="instantiate")

    def before_predict(self) -> None:
        """Write whole-scene predictions to files even when the config names no writer.

        A training config predicts as it is: with a datamodule that predicts scenes and no
        prediction writer among the callbacks, a :class:`GeoTiffPredictionWriter` writes
        to ``<trainer.default_root_dir>/predictions`` (add one to the callbacks to choose
        its folder and options).
        """
        trainer, datamodule = self.trainer, self.datamodule
        if not isinstance(datamodule, ScenePredictionMixin):
            return
        if any(isinstance(c, BasePredictionWriter) for c in trainer.callbacks):
            return
        folder = Path(trainer.default_root_dir) / "predictions"
        rank_zero_info(f"Writing predictions to {folder} (GeoTiffPredictionWriter).")
        trainer.callbacks.append(GeoTiffPredictionWriter(folder))

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, turning jsonargparse's errors into one paragraph naming the key.

        Raises:
            ConfigError: an unknown key (with the closest one), a value of the wrong type,
                a missing or unreadable config file, or a ``ckpt_path`` without checkpoint.
        """
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            parsers = getattr(self, "_subcommand_parsers", {})
            raise ConfigError(command_line_error(str(error), args, parsers)) from None
        subcommand = self.config.get("subcommand")
        if subcommand is not None:
            check_ckpt_path(self.config[subcommand].get("ckpt_path"))

    def instantiate_classes(self) -> None:
        """Build the classes; a person's mistake comes out unwrapped from jsonargparse's."""
        try:
            super().instantiate_classes()
        except Exception as error:
            found = config_error_in(error)
            if found is None or found is error:
                raise
            raise found from None

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
    """Entry point of ``stsun``: ``stsun fit|validate|test|predict|export --config ...``.

    ``export`` is not a Trainer method, so it has a small parser of its own
    (:func:`~stsun_lightning.export.command.export_main`). A person's mistake ends the
    output as ``error: <message>`` on stderr, one paragraph, and exits with status 2; a
    bug keeps its traceback.
    """
    arguments = sys.argv[1:] if args is None else list(args)
    try:
        if arguments[:1] == ["export"]:
            from stsun_lightning.export.command import export_main

            export_main(arguments[1:])
            return
        build_cli(args)
    except Exception as error:
        found = config_error_in(error)
        if found is not None:
            message = person_message(found)
        elif isinstance(error, ArgumentError):  # Lightning parses a checkpoint's hparams
            message = (
                "ckpt_path: the checkpoint's hyperparameters do not fit the model's options: "
                + parse_error_message(str(error))
            )
        else:
            raise
        sys.stdout.flush()  # what Lightning printed comes first, even through one pipe
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
