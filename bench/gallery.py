"""Gallery bench: images/s for decode only, score one at a time, and pipelined scoring.

    python bench/gallery.py --images photos/ --program model.pte
    python bench/gallery.py --images photos/ --program model.pte --threads 1 --decode-threads 1,2,3
    python bench/gallery.py --images photos/ --program model.pte --memory-files 10000
    python bench/gallery.py --images photos/ --program model.pte --cpp build/cpp-host/cmake/agiqa-score-cpp
    python bench/gallery.py --make-gallery /tmp/photos/x --images /tmp/gallery --program model.pte

--images: a folder of photos (multi-megapixel JPEGs are the case that matters: phones shoot
12-50 MP). --program: an exported .pte with its model.json (``agiqa-export executorch``).
``--make-gallery SRC`` first writes such a folder into --images from the photographs under SRC
(``bench/ood_photos.py --fetch``): ``--gallery-photos`` photos (default 40; distinct while
they last), each
resized to a size spread log-evenly over 1.3-18 MP, saved as JPEG q90.

Rows, each over every image of the folder (after one untimed pass that warms the file cache):
- ``decode only, N thread(s)``: ``PreprocessSpec.decode`` (EXIF, RGB8, the spec's JPEG draft
  decode), on a pool of N threads: the rate the images can be read at;
- ``score one at a time``: decode, preprocess and run in one thread (``decode_threads=0``;
  what ``Scorer.score_many`` did before the pipeline);
- ``pipelined, N decode thread(s)``: ``Scorer.score_many(decode_threads=N)``, decoding ahead
  on N threads while the program runs; its scores must equal the one-at-a-time scores exactly.
The ratio column is each rate over the two-thread decode-only rate (the goal: pipelined >= 0.6).
``--memory-files N`` streams N paths (the folder repeated) through ``Scorer.iter_scores`` and
prints the process RSS every 10% of them: flat means the pipeline holds no image it is done with.
Run with an older tree on PYTHONPATH to measure it: rows its Scorer cannot do are left out.

``--cpp BINARY`` adds the C++ CLI's rows (``agiqa-score-cpp``, build it with
``python edge_runtime/cpp/build.py``): ``C++ one at a time`` (``--decode-threads 0``) and
``C++ pipelined, N decode thread(s)``, each running the binary on every image of the folder. Their
rate is the one the binary prints itself (``--timing``: from its first image to its last row,
so the process start and the program load are left out); the runtime threads are its default.
Their scores must equal each other exactly (not Python's: another decoder and resize build).
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # an explicit PYTHONPATH (another tree) comes first
    sys.path.append(str(REPO))

from edge_runtime import Scorer  # noqa: E402
from edge_runtime.images import find_images  # noqa: E402


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def make_gallery(src: Path, out: Path, photos: int = 40, smallest_mp: float = 1.3,
                 largest_mp: float = 18.0, quality: int = 90) -> list[Path]:
    """``photos`` JPEGs in ``out`` from the distinct photographs under ``src`` (taken in turn, so
    with fewer photos than that some come twice, at two sizes), resized (bicubic, the aspect
    kept) to sizes spread log-evenly from ``smallest_mp`` to ``largest_mp`` megapixels."""
    from PIL import Image

    sys.path.insert(0, str(REPO / "bench"))
    from ood_photos import distinct_photos

    distinct = distinct_photos(src)
    if not distinct:
        sys.exit(f"error: {src}: no photos found; pass a folder from bench/ood_photos.py --fetch")
    # Interleave sizes and photos: photo k % len(distinct) at the k-th size of a shuffled order.
    order = sorted(range(photos), key=lambda k: (k * 7919) % photos)
    sources = [distinct[k % len(distinct)] for k in order]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, source in zip(range(photos), sources):
        megapixels = smallest_mp * (largest_mp / smallest_mp) ** (i / max(1, photos - 1))
        with Image.open(source) as image:
            image = image.convert("RGB")
            scale = math.sqrt(megapixels * 1e6 / (image.width * image.height))
            size = (round(image.width * scale), round(image.height * scale))
            name = source.parts[source.parts.index("contents") - 1] if "contents" in source.parts else source.stem
            path = out / f"{i:03d}_{name}.jpg"
            image.resize(size, Image.Resampling.BICUBIC).save(path, quality=quality)
        written.append(path)
    return written


def cpp_rate(binary: Path, program: Path, paths: list[Path], decode_threads: int,
             rounds: int) -> tuple[float, list[str]]:
    """Images/s that ``binary --timing`` reports for ``paths`` (best of ``rounds``), and its rows."""
    best, rows = 0.0, []
    for _ in range(rounds):
        done = subprocess.run([str(binary), "--timing", "--no-golden-check", "--decode-threads",
                               str(decode_threads), str(program), *map(str, paths)],
                              capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            sys.exit(f"error: {binary} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
        timing = [line for line in done.stderr.splitlines() if line.startswith("timing:")]
        best = max(best, float(timing[-1].rsplit(": ", 1)[1].split()[0]))
        rows = done.stdout.splitlines()
    return best, rows


def rate(fn, count: int, rounds: int) -> float:
    """Images/s of ``fn()`` (which handles ``count`` images), best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="Folder of photos.")
    parser.add_argument("--program", type=Path, required=True, help="The .pte (model.json beside it).")
    parser.add_argument("--threads", type=int, default=None,
                        help="Runtime threads (default: the runtime's choice).")
    parser.add_argument("--decode-threads", default="1,2",
                        help="Comma-separated decode thread counts for the pipelined rows.")
    parser.add_argument("--rounds", type=int, default=2, help="Timed passes per row (best kept).")
    parser.add_argument("--memory-files", type=int, default=0,
                        help="Also stream this many paths (the folder repeated) and print the RSS.")
    parser.add_argument("--cpp", type=Path, default=None,
                        help="agiqa-score-cpp binary: add its one-at-a-time and pipelined rows.")
    parser.add_argument("--make-gallery", type=Path, default=None, metavar="SRC",
                        help="First write --images from the photos under SRC (see above).")
    parser.add_argument("--gallery-photos", type=int, default=40,
                        help="With --make-gallery: how many distinct photos.")
    args = parser.parse_args()

    if args.make_gallery is not None:
        make_gallery(args.make_gallery, args.images, args.gallery_photos)

    paths = find_images(args.images)
    if not paths:
        sys.exit(f"error: {args.images}: no images found; pass a folder of photos")
    options = {"threads": args.threads}
    load = inspect.signature(Scorer.from_file).parameters
    if "verify_golden" in load:
        options["verify_golden"] = False  # a bench measures scoring, not the load-time check
    scorer = Scorer.from_file(args.program, **options)
    spec = scorer.contract.preprocess
    pipelined = "decode_threads" in inspect.signature(Scorer.score_many).parameters
    megapixels = []
    from PIL import Image

    for path in paths:
        with Image.open(path) as image:
            megapixels.append(image.size[0] * image.size[1] / 1e6)
    print(f"{len(paths)} images from {args.images} ({min(megapixels):.1f}-{max(megapixels):.1f} MP, "
          f"median {sorted(megapixels)[len(megapixels) // 2]:.1f}); program {args.program} "
          f"({scorer.contract.quantize}, input {list(scorer.input_size)}); runtime threads "
          f"{args.threads or 'default'}; {os.cpu_count()} CPUs; Scorer from "
          f"{Path(inspect.getfile(Scorer)).parent}")
    for path in paths:  # untimed: the file cache, the decoder's first-use costs
        spec.decode(path)

    rows: list[tuple[str, float]] = []

    def decode_pool(threads: int) -> None:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(spec.decode, paths):
                pass

    for threads in (1, 2):
        rows.append((f"decode only, {threads} thread(s)",
                     rate(lambda t=threads: decode_pool(t), len(paths), args.rounds)))
    reference: list = []

    def one_at_a_time() -> None:
        if pipelined:
            reference[:] = scorer.score_many(paths, decode_threads=0)
        else:
            reference[:] = scorer.score_many(paths)

    rows.append(("score one at a time", rate(one_at_a_time, len(paths), args.rounds)))
    if pipelined:
        for threads in (int(t) for t in args.decode_threads.split(",")):
            got: list = []

            def run(t: int = threads, out: list = got) -> None:
                out[:] = scorer.score_many(paths, decode_threads=t)

            rows.append((f"pipelined, {threads} decode thread(s)", rate(run, len(paths), args.rounds)))
            if got != reference:
                sys.exit(f"error: pipelined scores ({threads} decode threads) differ from one at a time")
    if args.cpp is not None:
        thread_counts = [0] + [int(t) for t in args.decode_threads.split(",")]
        cpp_rows = {}
        for threads in thread_counts:
            name = "C++ one at a time" if threads == 0 else f"C++ pipelined, {threads} decode thread(s)"
            value, cpp_rows[threads] = cpp_rate(args.cpp, args.program, paths, threads, args.rounds)
            rows.append((name, value))
            if cpp_rows[threads] != cpp_rows[0]:
                sys.exit(f"error: C++ pipelined scores ({threads} decode threads) differ from one at a time")
    base = rows[1][1]
    print(f"{'row':<34} {'images/s':>9} {'x decode(2)':>12}")
    for name, value in rows:
        print(f"{name:<34} {value:>9.1f} {value / base:>12.2f}")
    if pipelined:
        print("pipelined scores equal the one-at-a-time scores exactly "
              f"({sum(r.ok for r in reference)} scored, {sum(not r.ok for r in reference)} skipped)")
    if args.cpp is not None:
        print("C++ pipelined rows equal its one-at-a-time rows exactly; C++ rates from the binary's "
              "own --timing (load left out)")

    if args.memory_files and pipelined:
        stream = itertools.islice(itertools.cycle(paths), args.memory_files)
        step = max(1, args.memory_files // 10)
        samples = [f"start {rss_mb():.0f}"]
        start = time.perf_counter()
        for i, _ in enumerate(scorer.iter_scores(stream), start=1):
            if i % step == 0:
                samples.append(f"{i}: {rss_mb():.0f}")
        seconds = time.perf_counter() - start
        print(f"RSS (MB) over {args.memory_files} streamed paths ({args.memory_files / seconds:.1f} "
              f"images/s): " + ", ".join(samples))


if __name__ == "__main__":
    main()
