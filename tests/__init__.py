"""The test suite; its folders mirror the packages (tests/teacher/ tests teacher/, ...).

Tests import shared helpers as ``tests.<module>`` (the suite is a package so that the folders
named like the packages cannot shadow them).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository root


def modules_loaded_by(imports: str, watched: set[str]) -> list[str]:
    """Which of ``watched`` (module names; a top-level name also matches its submodules) a fresh
    interpreter has loaded after ``import <imports>``: what an import costs, free of this process."""
    import json
    import subprocess
    import sys

    code = (f"import json, sys, {imports}\nwatched = {json.dumps(sorted(watched))}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m in watched or m.split('.')[0] in watched)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


# Not bitwise reproducible across processes (see distill.metrics); the rest of a record is.
FITTED_METRICS = ("plcc", "rmse")


def metrics_differences(a: object, b: object, path: str = "", rel_tol: float = 1e-5) -> list[str]:
    """Where two metrics records (nested dicts/lists of JSON values) differ: exactly, except that keys
    ending in a :data:`FITTED_METRICS` name may differ by ``rel_tol``. ``[]`` when they agree."""
    import math

    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path or '.'}: keys {sorted(a.keys() ^ b.keys())} on one side only"]
        return [d for k in a for d in metrics_differences(a[k], b[k], f"{path}/{k}", rel_tol)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} entries"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in metrics_differences(x, y, f"{path}[{i}]", rel_tol)]
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return []
        if path.rsplit("/", 1)[-1].endswith(FITTED_METRICS) and math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12):
            return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
