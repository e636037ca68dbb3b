"""Models: tiny offline builders, checkpoint loading, and trainable parameter groups."""

from unlearn.models.fixups import reregister_output_capture
from unlearn.models.loading import load_checkpoint, load_model_and_processor, save_checkpoint
from unlearn.models.modules import (
    SCOPES,
    module_groups,
    select_trainable,
    unused_parameters,
)
from unlearn.models.processors import load_processor
from unlearn.models.tiny import build_tiny

__all__ = [
    "SCOPES",
    "build_tiny",
    "load_checkpoint",
    "load_model_and_processor",
    "load_processor",
    "module_groups",
    "reregister_output_capture",
    "save_checkpoint",
    "select_trainable",
    "unused_parameters",
]
