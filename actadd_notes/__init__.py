"""actadd-notes: ActAdd steering experiments from an Obsidian vault.

The public Python API (the README documents it; a test keeps the two in step).
torch and transformers load lazily, so vault-only use stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "actadd_notes.steering.models",
    "SteerableLM": "actadd_notes.steering.lm",
    "Completion": "actadd_notes.steering.lm",
    "ActAdd": "actadd_notes.steering.vectors",
    "SteeringVector": "actadd_notes.steering.vectors",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    # `X as X`: re-exported for type checkers; at run time `__getattr__` imports them on first use
    from actadd_notes.steering.lm import Completion as Completion
    from actadd_notes.steering.lm import SteerableLM as SteerableLM
    from actadd_notes.steering.models import load_model as load_model
    from actadd_notes.steering.vectors import ActAdd as ActAdd
    from actadd_notes.steering.vectors import SteeringVector as SteeringVector


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'actadd_notes' has no attribute {name!r}")
