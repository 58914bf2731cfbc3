"""Label cache: build, skips, resume after a kill, two-rank merge, fingerprints, corrupt shards."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from distill.data import DatasetSpec, load_records
from teacher.cache import build_label_cache, merge_manifests
from teacher.cache_read import LabelCache
from teacher.cache_schema import (
    FIELDS,
    CacheCorruptError,
    CacheCorruptWarning,
    CacheMismatchError,
    CacheMissingError,
    TeacherOutput,
    fingerprint_sha256,
)
from teacher.distributed import DistContext
from teacher.records import ImageRecord, iter_images

P, D, Q, E = 2, 6, 5, 3


class FakeLabeler:
    """Deterministic stand-in for MA-AGIQA: pixel statistics through a fixed random projection.

    Each image's labels depend on that image only, whatever the batch. ``fail_after`` raises
    (like a killed job) before labeling more than that many images."""

    def __init__(self, version: str = "v1", fail_after: int | None = None) -> None:
        self.version = version
        self.fail_after = fail_after
        self.seen: list[tuple[int, int]] = []  # (H, W) of every image labeled
        generator = torch.Generator().manual_seed(1234)
        self.projection = torch.randn(8, 1 + P * D + Q + E, generator=generator, dtype=torch.float64)

    def fingerprint(self) -> dict:
        return {"teacher": "fake-ma-agiqa", "version": self.version, "dims": [P, D, Q, E]}

    def label(self, images: list[np.ndarray]) -> TeacherOutput:
        if self.fail_after is not None and len(self.seen) + len(images) > self.fail_after:
            raise RuntimeError("simulated kill")
        self.seen.extend(image.shape[:2] for image in images)
        stats = []
        for image in images:
            x = torch.from_numpy(image).double() / 255.0
            stats.append(torch.stack([x.mean(), x.std(), *x.mean(dim=(0, 1)), x.amax(),
                                      torch.tensor(image.shape[0] / 100.0, dtype=torch.float64),
                                      torch.tensor(image.shape[1] / 100.0, dtype=torch.float64)]))
        z = (torch.stack(stats) @ self.projection).float()
        b = len(images)
        return TeacherOutput(score=z[:, 0], semantic_vectors=z[:, 1:1 + P * D].reshape(b, P, D),
                             quality_features=z[:, 1 + P * D:1 + P * D + Q],
                             gate_weights=z[:, 1 + P * D + Q:].softmax(dim=1))


@pytest.fixture
def records(tmp_path: Path, make_image_folder) -> list[ImageRecord]:
    make_image_folder(tmp_path / "data", n_good=10)
    return load_records(DatasetSpec("folder", tmp_path / "data"))


def build(records: list[ImageRecord], out: Path, labeler: FakeLabeler | None = None, **kwargs):
    kwargs = {"batch_size": 2, "shard_size": 4, "progress": False, **kwargs}
    return build_label_cache(records, labeler or FakeLabeler(), out, **kwargs)


def assert_same_cache(a: LabelCache, b: LabelCache) -> None:
    assert a.image_ids == b.image_ids
    ta, tb = a.tensors(), b.tensors()
    for key in TeacherOutput._fields:
        x, y = getattr(ta, key), getattr(tb, key)
        assert x.dtype == y.dtype and torch.equal(x, y), key
    assert a.skipped == b.skipped


def test_build_and_open(records: list[ImageRecord], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cache"
    report = build(records, out)
    assert (report.n_labeled, report.n_skipped) == (10, 3)
    assert len(report.skipped) == 3
    reasons = dict(report.skipped)
    assert "empty" in reasons["img03b.png"] and "not an image" in reasons["img06b.jpg"]
    assert "truncated" in reasons["img08b.jpg"]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "labelled 10" in line and "skipped 3" in line and "empty file" in line

    cache = LabelCache.open(out, fingerprint=FakeLabeler().fingerprint())
    assert len(cache) == 10 and "img00.jpg" in cache and "img03b.png" not in cache
    assert cache.image_ids == sorted(cache.image_ids)
    tensors = cache.tensors()
    assert tensors.score.shape == (10,) and tensors.score.dtype == torch.float32
    assert tensors.semantic_vectors.shape == (10, P, D) and tensors.semantic_vectors.dtype == torch.float16
    assert tensors.quality_features.shape == (10, Q) and tensors.gate_weights.shape == (10, E)

    # Each image's rows are the teacher's output for that image.
    record = next(r for r in records if r.image_id == "img05.png")
    image = next(iter_images([record]))[1]
    expected = FakeLabeler().label([image])
    got = cache.get("img05.png")
    assert torch.equal(got.score, expected.score[0])
    assert torch.equal(got.semantic_vectors, expected.semantic_vectors[0].half())
    with pytest.raises(KeyError, match="img03b.png"):
        cache.get("img03b.png")

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fingerprint"] == FakeLabeler().fingerprint()
    assert manifest["fingerprint_sha256"] == fingerprint_sha256(FakeLabeler().fingerprint())
    assert set(manifest["versions"]) == {"torch", "numpy", "safetensors", "python"}
    entry = next(i for i in manifest["images"] if i["image_id"] == "img05.png")
    assert entry["sha256"] == hashlib.sha256(record.path.read_bytes()).hexdigest()
    assert entry["relpath"] == "img05.png" and isinstance(entry["row"], int)
    for name, shard in manifest["shards"].items():
        assert shard["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
        # The on-disk format: one tensor per TeacherOutput field, keyed by the field's name.
        assert set(load_file(str(out / name))) == set(TeacherOutput._fields)
    assert {s["relpath"] for s in manifest["skipped"]} == {"img03b.png", "img06b.jpg", "img08b.jpg"}
    assert tuple(FIELDS) == TeacherOutput._fields and set(manifest["fields"]) == set(FIELDS)


def test_resume_after_kill_equals_uninterrupted_run(records: list[ImageRecord], tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    build(records, reference)
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated kill"):
        build(records, out, FakeLabeler(fail_after=5))  # dies in the middle of the second shard
    with pytest.raises(CacheMissingError, match="unfinished"):
        LabelCache.open(out)
    first_shard = out / "labels-r000-00000.safetensors"
    kept_bytes = first_shard.read_bytes()
    assert not (out / "labels-r000-00002.safetensors").exists()

    labeler = FakeLabeler()
    report = build(records, out, labeler)
    assert first_shard.read_bytes() == kept_bytes
    assert report.n_reused == 4 and report.n_labeled == 10
    assert len(labeler.seen) == 10 - 4  # only the unfinished shard and later ones were labeled again
    assert_same_cache(LabelCache.open(out), LabelCache.open(reference))
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()

    again = FakeLabeler()
    build(records, out, again)  # a finished cache: nothing to do
    assert again.seen == []


def test_two_ranks_merge_equals_one_rank(records: list[ImageRecord], tmp_path: Path) -> None:
    single = tmp_path / "single"
    build(records, single)
    multi = tmp_path / "multi"
    report0 = build(records, multi, ctx=DistContext(0, 2))
    assert not (multi / "manifest.json").exists()  # rank 1 has not run yet
    report1 = build(records, multi, ctx=DistContext(1, 2))
    assert report0.n_labeled + report1.n_labeled == 10 and report0.n_skipped + report1.n_skipped == 3
    merge_manifests(multi)
    merged = LabelCache.open(multi)
    assert_same_cache(merged, LabelCache.open(single))
    assert {s["rank"] for s in merged.manifest["shards"].values()} == {0, 1}


TWO_RANKS = """
import sys
from pathlib import Path
from distill.data import DatasetSpec, load_records
from teacher.distributed import init_distributed
from tests.teacher.test_cache import build, FakeLabeler
ctx = init_distributed("cpu")  # torchrun's env: a gloo process group of two
report = build(load_records(DatasetSpec("folder", Path(sys.argv[1]))), Path(sys.argv[2]), FakeLabeler(), ctx=ctx)
assert (report.rank, report.world_size) == (ctx.rank, 2), report
assert (Path(sys.argv[2]) / "manifest.json").is_file()  # rank 0 merged before the last barrier let anyone go
ctx.close()
"""


@pytest.mark.slow
@pytest.mark.e2e
def test_two_processes_under_torchrun_label_one_cache(records: list[ImageRecord], tmp_path: Path) -> None:
    """A real process group: ranks and world come from torchrun through one DistContext, the
    barriers hold, rank 0 merges, and the cache equals one process's."""
    import os
    import signal
    import subprocess
    import sys

    from tests import REPO

    single = tmp_path / "single"
    build(records, single)
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), str(tmp_path / "data"), str(tmp_path / "multi")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # a hung barrier: the ranks must not outlive the test
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"two ranks under torchrun did not finish in 120 s:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-3000:]
    merged = LabelCache.open(tmp_path / "multi")
    assert_same_cache(merged, LabelCache.open(single))
    assert {s["rank"] for s in merged.manifest["shards"].values()} == {0, 1}


def test_rank_defaults_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    ctx = DistContext.from_env()
    assert (ctx.rank, ctx.world, ctx.is_main) == (1, 3, False)
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="rank=5"):
        DistContext.from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x'"):
        DistContext.from_env()


def test_different_teacher_is_refused(records: list[ImageRecord], tmp_path: Path) -> None:
    out = tmp_path / "cache"
    build(records, out)
    other = FakeLabeler(version="v2")
    with pytest.raises(CacheMismatchError, match="built by a different teacher") as info:
        build(records, out, other)
    message = str(info.value)
    ours, theirs = fingerprint_sha256(FakeLabeler().fingerprint()), fingerprint_sha256(other.fingerprint())
    assert ours[:16] in message and theirs[:16] in message and str(out) in message and "--out" in message
    assert other.seen == []
    with pytest.raises(CacheMismatchError, match="different teacher"):
        LabelCache.open(out, fingerprint=other.fingerprint())
    assert len(LabelCache.open(out, fingerprint=ours)) == 10


def test_corrupt_shard_detected_on_open(records: list[ImageRecord], tmp_path: Path) -> None:
    out = tmp_path / "cache"
    build(records, out)
    shard = out / "labels-r000-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheCorruptError, match="labels-r000-00001.safetensors.*hash"):
        LabelCache.open(out)
    shard.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(CacheCorruptError, match="labels-r000-00001"):
        LabelCache.open(out)
    with pytest.raises(CacheCorruptError, match="unreadable safetensors"):
        LabelCache.open(out, verify=False)


def test_corrupt_shard_relabeled_on_resume(records: list[ImageRecord], tmp_path: Path) -> None:
    out = tmp_path / "cache"
    build(records, out)
    before = LabelCache.open(out)
    shard = out / "labels-r000-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    labeler = FakeLabeler()
    with pytest.warns(CacheCorruptWarning, match="labels-r000-00002"):
        build(records, out, labeler)
    assert 0 < len(labeler.seen) <= 4  # only the damaged shard
    assert_same_cache(LabelCache.open(out), before)


def test_bad_arguments_and_labeler_outputs(records: list[ImageRecord], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of batch_size"):
        build(records, tmp_path / "a", batch_size=3, shard_size=4)

    class WrongShape(FakeLabeler):
        def label(self, images):
            out = super().label(images)
            return out._replace(score=out.score[:, None])

    class UntypedOutput(FakeLabeler):
        def label(self, images):
            return super().label(images)._asdict()

    with pytest.raises(ValueError, match="'score' of shape"):
        build(records, tmp_path / "b", WrongShape())
    with pytest.raises(ValueError, match="must return a teacher.cache_schema.TeacherOutput, got dict"):
        build(records, tmp_path / "c", UntypedOutput())
    with pytest.raises(CacheMissingError, match="agiqa-distill label"):
        LabelCache.open(tmp_path / "never-built")


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage"])
def test_damaged_manifest_is_rebuilt_from_intact_parts(records: list[ImageRecord], tmp_path: Path,
                                                      damage: str) -> None:
    out = tmp_path / "cache"
    build(records, out)
    manifest = out / "manifest.json"
    original = manifest.read_bytes()
    if damage == "truncate":
        manifest.write_bytes(original[: len(original) // 2])
    elif damage == "delete":
        manifest.unlink()
    else:
        manifest.write_text("[1, 2]")
    with pytest.warns(CacheCorruptWarning, match="rebuilt it from the part manifests"):
        cache = LabelCache.open(out, fingerprint=FakeLabeler().fingerprint())
    assert manifest.read_bytes() == original and len(cache) == 10
    # The label command keeps every shard as well: nothing is labelled again.
    manifest.write_bytes(original[:100])
    labeler = FakeLabeler()
    report = build(records, out, labeler)
    assert labeler.seen == [] and report.n_reused == 13 and manifest.read_bytes() == original


def test_damaged_manifest_with_a_damaged_shard_is_not_rebuilt(records: list[ImageRecord], tmp_path: Path) -> None:
    out = tmp_path / "cache"
    build(records, out)
    (out / "manifest.json").write_text("{")
    shard = out / "labels-r000-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CacheCorruptError, match="manifest.json: unreadable"):
        LabelCache.open(out)
