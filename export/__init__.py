"""Export a distilled student to an ExecuTorch program with its contract (``agiqa-export``).

    from export import export_executorch
    report = export_executorch("runs/r1", "model.pte", quantize="int8")

Writes ``model.pte``, ``model.json`` (the contract read by :mod:`edge_runtime`) and
``model.report.json`` (fidelity against the eager student, latency, size, delegate coverage).
"""

from .executorch import (
                         DEFAULT_MAX_ABS_DIFF,
                         DEFAULT_MIN_SRCC,
                         QUANTIZE_MODES,
                         ExportError,
                         ExportReport,
                         FidelityError,
                         Verification,
                         export_executorch,
)
from .wrapper import EdgeStudent

__all__ = ["DEFAULT_MAX_ABS_DIFF", "DEFAULT_MIN_SRCC", "EdgeStudent", "ExportError", "ExportReport",
           "FidelityError", "QUANTIZE_MODES", "Verification", "export_executorch"]
