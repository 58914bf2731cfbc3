"""Golden-pair agreement of the C++ scorer: x86-64 (native) and aarch64 (qemu-user CPU models).

    python bench/cpp_golden.py model.pte [model_fp32.pte ...] \\
        [--cpus cortex-a53 cortex-a76 neoverse-n1 max max,sme=off] [--qemu qemu-aarch64] \\
        [--build-dir build/cpp]

Builds agiqa-score-cpp for the host and for aarch64 (edge_runtime/cpp/build.py), runs
``--check-golden`` on every program, and prints per program and CPU the max abs diff of the
score and of the gate weights against the golden outputs (written at export by the Python
runtime), the model-input diff of the C++ preprocessing, and whether the load-time check passes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge_runtime" / "cpp"))
import build as cpp_build  # noqa: E402

SYSROOT = "/usr/aarch64-linux-gnu"


def check(binary: Path, program: Path, qemu: str | None, cpu: str | None) -> dict:
    command = [str(binary), "--check-golden", str(program)]
    if cpu is not None:
        command = [qemu, "-L", SYSROOT, "-cpu", cpu, *command]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if not done.stdout.startswith("{"):
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1], "seconds": seconds}
    report = json.loads(done.stdout)
    pairs = report["pairs"]
    return {"passed": report["passed"], "seconds": seconds,
            "score": max(p["score_abs_diff"] for p in pairs),
            "gate": max(p["gate_max_abs_diff"] for p in pairs),
            "input": max(p["preprocess_max_abs_diff"] for p in pairs),
            "scores": [round(p["score"], 6) for p in pairs]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("programs", nargs="+", type=Path)
    parser.add_argument("--cpus", nargs="*", default=["cortex-a53", "cortex-a76", "neoverse-n1"])
    parser.add_argument("--qemu", default="qemu-aarch64")
    parser.add_argument("--build-dir", type=Path, default=Path("build/cpp"))
    args = parser.parse_args()
    host = cpp_build.build("host", args.build_dir / "host")
    arm = cpp_build.build("aarch64", args.build_dir / "aarch64") if args.cpus else None
    print(f"{'program':<28} {'cpu':<24} {'pass':<5} {'score diff':>10} {'gate diff':>10} "
          f"{'input diff':>10} {'s':>6}  scores")
    for program in args.programs:
        rows = [("x86-64 (native)", check(host, program, None, None))]
        rows += [(f"qemu {cpu}", check(arm, program, args.qemu, cpu)) for cpu in args.cpus]
        for cpu, r in rows:
            name = str(program)[-28:]
            if "error" in r:
                print(f"{name:<28} {cpu:<24} error: {r['error']}")
                continue
            print(f"{name:<28} {cpu:<24} {str(r['passed']):<5} {r['score']:>10.3g} {r['gate']:>10.3g} "
                  f"{r['input']:>10.3g} {r['seconds']:>6.1f}  {r['scores']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
