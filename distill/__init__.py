"""Distillation of the MA-AGIQA teacher into the mobile student (``agiqa-distill``)."""

from .config import RunConfig, load_config, load_resume_config
from .run import RunResult, resume_distillation, run_distillation

__all__ = ["RunConfig", "RunResult", "load_config", "load_resume_config", "resume_distillation",
           "run_distillation"]
