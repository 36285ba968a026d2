"""transferlab: transfer learning on images — measure your data, pick the fine-tuning strategy, say why."""

from transferlab.advisor import advise_source as advise
from transferlab.backbones import create_backbone, list_backbones
from transferlab.classifier import TransferClassifier, load
from transferlab.config import FitConfig

__version__ = "0.1.0"

__all__ = ["FitConfig", "TransferClassifier", "advise", "create_backbone", "list_backbones", "load"]
