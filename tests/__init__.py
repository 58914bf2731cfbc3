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
