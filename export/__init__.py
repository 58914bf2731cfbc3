"""Export a distilled student to an ExecuTorch program with its contract (``agiqa-export``).

    from export import export_executorch
    report = export_executorch("runs/r1", "model.pte", quantize="int8")

Two steps: :func:`export.build.build_program` (no files) and :func:`export.publish.publish_program`.
Writes ``model.pte``, ``model.json`` (the contract read by :mod:`edge_runtime`) and
``model.report.json`` (fidelity against the eager student, latency, size, delegate coverage).
"""

from .backends import QUANTIZE_MODES
from .executorch import export_executorch
from .report import DEFAULT_MAX_ABS_DIFF, DEFAULT_MIN_SRCC, ExportError, ExportReport, FidelityError, Verification
from .wrapper import EdgeStudent

__all__ = ["DEFAULT_MAX_ABS_DIFF", "DEFAULT_MIN_SRCC", "EdgeStudent", "ExportError", "ExportReport",
           "FidelityError", "QUANTIZE_MODES", "Verification", "export_executorch"]
