"""The STSUN network and its building blocks."""

from stsun_lightning.models.factory import PRESETS, create_model, list_models
from stsun_lightning.models.stsun import Stsun, StsunOutput
from stsun_lightning.models.vocabulary import DEFAULT_TASKS, Vocabulary, VocabularyEmbedding

__all__ = [
    "DEFAULT_TASKS",
    "PRESETS",
    "Stsun",
    "StsunOutput",
    "Vocabulary",
    "VocabularyEmbedding",
    "create_model",
    "list_models",
]
