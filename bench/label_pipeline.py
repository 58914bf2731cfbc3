"""Labelling throughput with N preparation workers, against merely decoding the same files.

    python bench/label_pipeline.py --images /tmp/jpeg1024 --workers 0 1 2 --noop
    python bench/label_pipeline.py --images /tmp/jpeg1024 --workers 0 1 2 --tiny

Make the JPEGs with ``bench/label_cpu_cost.py --make-from PHOTO_DIR --images DIR``; ``--repeat N``
labels every file N times (as distinct images), so that worker start-up does not dominate.
Prints images/s:

- ``decode_threads``: ``load_rgb`` of every file on ``--threads`` threads (the rate to compare to);
- ``noop``: ``build_label_cache`` with a stand-in labeler whose per-image work is the official
  teacher's (read, sha256, decode, MANIQA's cv2-exact 224 view, mPLUG-Owl2's 448 CLIP view) and
  whose model is a no-op, views as a GPU teacher gets them (uint8 levels): the pipeline's own
  scaling with workers; with ``--device-ms T`` it sleeps T ms per image instead, a stand-in for a
  GPU's measured time (the pipeline should then run at the slower of the two);
- ``tiny``: ``build_label_cache`` with the tiny random teacher (what ``agiqa-distill label --tiny`` runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from distill.data import DatasetSpec, load_records
from edge_runtime.images import load_rgb
from teacher.cache import build_label_cache
from teacher.cache_schema import TeacherOutput
from teacher.labeler import Teacher, TeacherConfig, TeacherInputs, save_tiny_teacher
from teacher.records import ImageRecord
from teacher.semantic import SquareInputs

REPO = Path(__file__).resolve().parents[1]


class NoopLabeler:
    """The official teacher's per-image CPU work, and no model."""

    def __init__(self, device_ms_per_image: float = 0.0) -> None:
        from transformers import CLIPImageProcessorPil

        self.device_s = device_ms_per_image / 1000
        config = TeacherConfig.from_dict(json.loads((REPO / "configs" / "teacher_mplug_owl2.json").read_text()))
        processor = CLIPImageProcessorPil(size={"shortest_edge": 448}, crop_size={"height": 448, "width": 448},
                                          resample=3)
        # As a teacher on a GPU prepares: uint8 levels, normalised on the device.
        self.prepare = TeacherInputs(config, SquareInputs(tuple(processor.image_mean), processor, levels=True))

    def fingerprint(self) -> dict:
        return {"teacher": "noop"}

    def label_prepared(self, inputs: list) -> TeacherOutput:
        b = len(inputs)
        if self.device_s:  # a GPU's time per batch; sleeping leaves the CPU free, as a GPU does
            time.sleep(self.device_s * b)
        return TeacherOutput(torch.zeros(b), torch.zeros(b, 2, 4), torch.zeros(b, 4), torch.zeros(b, 3))

    def label(self, images: list) -> TeacherOutput:
        return self.label_prepared([self.prepare(im) for im in images])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="torch threads and decode threads")
    parser.add_argument("--noop", action="store_true", help="model replaced by a no-op")
    parser.add_argument("--device-ms", type=float, default=0.0,
                        help="--noop: the stand-in takes this many ms per image, as a GPU would (sleeping)")
    parser.add_argument("--tiny", action="store_true", help="the tiny random teacher")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1,
                        help="label each file this many times (as distinct images): runs long enough to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = [ImageRecord(f"{r.image_id}#{k}", r.path, f"{r.relpath}#{k}")
               for k in range(args.repeat) for r in load_records(DatasetSpec("folder", args.images))]
    paths = [r.path for r in records]
    result: dict = {"images": len(records), "threads": args.threads, "batch_size": args.batch_size}
    with ThreadPoolExecutor(args.threads) as pool:
        rates = []
        for _ in range(3):  # the best of 3 passes (the first also reads the files into the page cache)
            start = time.perf_counter()
            list(pool.map(load_rgb, paths))
            rates.append(len(paths) / (time.perf_counter() - start))
        result["decode_threads"] = round(max(rates), 1)
    work = Path(tempfile.mkdtemp())
    labelers = {}
    if args.noop:
        labelers["noop"] = NoopLabeler(args.device_ms)
    if args.tiny:
        labelers["tiny"] = Teacher.from_pretrained(save_tiny_teacher(work / "teacher"), device="cpu")
    for name, labeler in labelers.items():
        for workers in args.workers:
            out = work / f"{name}-{workers}"
            start = time.perf_counter()
            build_label_cache(records, labeler, out, batch_size=args.batch_size, progress=False,
                              num_workers=workers)
            result[f"{name}_w{workers}"] = round(len(records) / (time.perf_counter() - start), 1)
            shutil.rmtree(out)
    shutil.rmtree(work)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
