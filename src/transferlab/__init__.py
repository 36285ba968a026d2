"""transferlab: transfer learning on images — measure your data, pick the fine-tuning strategy, say why.

The public names are imported on first use (PEP 562), so that `transferlab --help`, which imports this
package before its command line, does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transferlab.advisor import advise_source as advise
    from transferlab.backbones import create_backbone, list_backbones
    from transferlab.classifier import TransferClassifier, load
    from transferlab.config import FitConfig

__version__ = "0.1.0"

__all__ = ["FitConfig", "TransferClassifier", "advise", "create_backbone", "list_backbones", "load"]

_PUBLIC = {
    "FitConfig": ("transferlab.config", "FitConfig"),
    "TransferClassifier": ("transferlab.classifier", "TransferClassifier"),
    "advise": ("transferlab.advisor", "advise_source"),
    "create_backbone": ("transferlab.backbones", "create_backbone"),
    "list_backbones": ("transferlab.backbones", "list_backbones"),
    "load": ("transferlab.classifier", "load"),
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        module, attribute = _PUBLIC[name]
        return getattr(importlib.import_module(module), attribute)
    try:  # a submodule, as `import transferlab; transferlab.classifier` finds it once imported
        return importlib.import_module(f"transferlab.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"transferlab.{name}":  # the submodule exists but lacks a dependency: say so
            raise
        raise AttributeError(f"module 'transferlab' has no attribute {name!r}") from None
