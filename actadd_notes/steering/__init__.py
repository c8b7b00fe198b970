"""The ActAdd engine: torch and transformers only, no knowledge of vaults or notes."""

from actadd_notes.steering.decode import DECODE_MODES, DecodeMode
from actadd_notes.steering.hooks import BLOCK_PATHS, SteeringPlan, find_blocks
from actadd_notes.steering.lm import Completion, GenerationRecord, SteerableLM
from actadd_notes.steering.models import EMBEDDED, load_model
from actadd_notes.steering.sampling import Sampling
from actadd_notes.steering.vectors import ActAdd, SteeringVector

__all__ = [
    "BLOCK_PATHS",
    "DECODE_MODES",
    "EMBEDDED",
    "ActAdd",
    "Completion",
    "DecodeMode",
    "GenerationRecord",
    "Sampling",
    "SteerableLM",
    "SteeringPlan",
    "SteeringVector",
    "find_blocks",
    "load_model",
]
