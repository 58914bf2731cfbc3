"""Distillation of the MA-AGIQA teacher into the mobile student (``agiqa-distill``)."""

from .config import RunConfig, load_config
from .run import run_distillation

__all__ = ["RunConfig", "load_config", "run_distillation"]
