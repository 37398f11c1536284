"""Training: losses and the LightningModule."""

from stsun_lightning.tasks.losses import IGNORE_INDEX, category_loss, value_loss

__all__ = ["IGNORE_INDEX", "category_loss", "value_loss"]
