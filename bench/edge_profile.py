"""Where a program's time goes: XNNPACK's per-operator timing from an ExecuTorch ETDump.

    python bench/edge_profile.py model.pte                 # the slowest operators, 2 threads
    python bench/edge_profile.py model.pte --top 0 --runs 50

Loads the program with ETDump enabled (the executorch wheel's pybindings), runs it ``--runs``
times on a random input of its shape, and prints the delegate call's median and, per XNNPACK
operator (in execution order, ``--top N``: the N slowest), its median in ms. Operators of the
contrast stem are the float ones before the first quantized (QC8) convolution.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

_SKIP = ("DELEGATE_CALL", "Method::execute", "OPERATOR_CALL")


def profile(program: Path, runs: int, threads: int) -> tuple[float, list[tuple[str, float]]]:
    """``(delegate median ms, [(operator, median ms), ...] in execution order)``."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)
    module = portable_lib._load_for_executorch(str(program), enable_etdump=True)
    meta = module.method_meta("forward").input_tensor_meta(0)
    x = torch.randn(*meta.sizes())
    for _ in range(runs):
        module.run_method("forward", (x,))
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "run.etdp"
        module.write_etdump_result_to_file(str(dump))
        inspector = Inspector(etdump_path=str(dump))
    events = [e for block in inspector.event_blocks if block.name == "Execute" for e in block.events
              if e.perf_data is not None]
    delegate = sum(float(e.perf_data.p50) for e in events if str(e.name) == "DELEGATE_CALL")
    ops = [(str(e.name), float(e.perf_data.p50)) for e in events if str(e.name) not in _SKIP]
    return delegate, ops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("program", type=Path)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=15, help="the N slowest operators (0: all, in order)")
    args = parser.parse_args(argv)
    if not args.program.is_file():
        print(f"error: {args.program}: no such program; pass a .pte written by agiqa-export", file=sys.stderr)
        return 2
    delegate, ops = profile(args.program, args.runs, args.threads)
    print(f"{args.program}: delegate call median {delegate:.3f} ms over {args.runs} runs, {args.threads} "
          f"threads; operators sum {sum(ms for _, ms in ops):.3f} ms")
    shown = sorted(ops, key=lambda op: -op[1])[:args.top] if args.top else ops
    for name, ms in shown:
        print(f"  {name:<48} {ms:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
