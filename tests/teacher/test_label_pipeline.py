"""The labelling pipeline: workers prepare inputs ahead of the model, with the same labels."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.data import DatasetSpec, load_records
from edge_runtime.images import ImageLoadError, load_rgb
from teacher.cache import build_label_cache
from teacher.cache_read import LabelCache
from teacher.labeler import Teacher, save_tiny_teacher


def _folder(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(7):
        arr = (rng.random((40 + 6 * i, 56 - 3 * i, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"img{i:02d}.{'jpg' if i % 2 else 'png'}")
    Image.fromarray(arr[:, :, 0]).save(root / "grey.png")  # not RGB: converted on the way
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Teacher:
    return Teacher.from_pretrained(save_tiny_teacher(tmp_path_factory.mktemp("t") / "teacher"), device="cpu")


def test_workers_give_the_same_cache_bit_for_bit(tmp_path: Path, teacher: Teacher) -> None:
    records = load_records(DatasetSpec("folder", _folder(tmp_path / "data")))
    caches = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        report = build_label_cache(records, teacher, out, batch_size=2, shard_size=4, progress=False,
                                   num_workers=workers)
        assert (report.n_labeled, report.n_skipped) == (8, 2)
        caches[workers] = LabelCache.open(out)
    a, b = caches[0], caches[2]
    assert a.image_ids == b.image_ids and a.skipped == b.skipped
    assert dict(a.skipped)["empty.png"].startswith("empty file")
    assert all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))
    shards = sorted(p.name for p in (tmp_path / "w0").glob("*.safetensors"))
    assert shards and all((tmp_path / "w0" / n).read_bytes() == (tmp_path / "w2" / n).read_bytes() for n in shards)
    assert (tmp_path / "w0/manifest.json").read_text() == (tmp_path / "w2/manifest.json").read_text()
    # ... and equal to Teacher.label (what other callers use) on the same batch: shard 0 is
    # broken.jpg, empty.png, grey.png, img00.png, so its one batch is grey.png and img00.png.
    record = next(r for r in records if r.image_id == "grey.png")
    pair = [load_rgb(next(r for r in records if r.image_id == i).path) for i in ("grey.png", "img00.png")]
    direct = teacher.label(pair)
    assert torch.equal(direct.score, torch.stack([a.get("grey.png").score, a.get("img00.png").score]))
    assert torch.equal(direct.semantic_vectors[0].half(), a.get("grey.png").semantic_vectors)
    entry = next(i for i in a.manifest["images"] if i["image_id"] == "grey.png")
    assert entry["sha256"] == hashlib.sha256(record.path.read_bytes()).hexdigest()


def test_prepared_inputs_are_picklable_numpy(teacher: Teacher) -> None:
    import pickle

    image = (np.random.default_rng(0).random((30, 50, 3)) * 255).astype(np.uint8)
    prepare = pickle.loads(pickle.dumps(teacher.prepare))  # what a spawned worker gets
    view, semantic = prepare(image)
    assert view.dtype == np.float32 and view.shape == (3, 224, 224)
    assert isinstance(semantic, np.ndarray)
    out = teacher.label_prepared([(view, semantic)])
    assert all(torch.equal(x, y) for x, y in zip(out, teacher.label([image])))


def test_uint8_level_views_give_the_same_labels(teacher: Teacher) -> None:
    """TeacherInputs with SquareInputs(levels=True) (what a GPU teacher's workers make): the MANIQA view leaves the
    worker as its resized uint8 image and is normalised on the device by table lookup; the labels
    are those of the float32 views, bit for bit."""
    from teacher.labeler import TeacherInputs

    rng = np.random.default_rng(5)
    images = [(rng.random((30 + 9 * i, 50 - 4 * i, 3)) * 255).astype(np.uint8) for i in range(3)]
    prepare = TeacherInputs(teacher.config, teacher.encoder.inputs(levels=True))
    inputs = [prepare(image) for image in images]
    assert all(view.dtype == np.uint8 and view.shape == (224, 224, 3) for view, _ in inputs)
    out = teacher.label_prepared(inputs)
    assert all(torch.equal(x, y) for x, y in zip(out, teacher.label(images)))


def test_llava_image_processor_once_per_image_gives_the_processors_vectors(teacher: Teacher) -> None:
    """A LLaVA-style processor maps every image to pixels of one shape and the prompts to the same
    tokens, so its image processor runs once per image (in the workers, ``prepare``) and the
    prompts' tokens once; the vectors are those of the whole processor run per (image, prompt)."""
    backend = teacher.encoder.backend
    assert backend.pixel_processor is not None  # the tiny teacher's processor is of that kind
    rng = np.random.default_rng(7)
    images = [Image.fromarray((rng.random((30 + 11 * i, 50 - 6 * i, 3)) * 255).astype(np.uint8)) for i in range(3)]
    fast = teacher.encoder.encode(images)
    prepared = teacher.encoder.encode_prepared([teacher.encoder.inputs()(im) for im in images])
    backend._fixed_size = False  # the processor on every (image, prompt), as before
    try:
        assert teacher.encoder.inputs()(images[0]).dtype == np.uint8  # the square, unprocessed
        whole = teacher.encoder.encode(images)
    finally:
        backend._fixed_size = True
    assert torch.equal(fast, whole) and torch.equal(prepared, whole)


def test_level_lookup_is_the_normalisation() -> None:
    """normalize_table + lookup_levels give normalize's float32 values exactly, for any mean/std."""
    from edge_runtime.preprocess import normalize, normalize_table
    from teacher.views import lookup_levels

    rgb = np.random.default_rng(6).integers(0, 256, (2, 17, 23, 3), dtype=np.uint8)
    for mean, std in (((0.5,) * 3, (0.5,) * 3), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        got = lookup_levels(torch.from_numpy(rgb), torch.from_numpy(normalize_table(mean, std)))
        assert got.dtype == torch.float32 and got.shape == (2, 3, 17, 23)
        expected = np.stack([normalize(image, mean, std) for image in rgb])
        assert np.array_equal(got.numpy(), expected)
    with pytest.raises(ValueError, match="uint8"):
        lookup_levels(torch.zeros(1, 2, 2, 3), torch.zeros(3, 256))


def test_load_rgb_from_bytes_matches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((20, 30, 3)) * 255).astype(np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue())
    assert np.array_equal(load_rgb(path, data=path.read_bytes()), load_rgb(path))
    with pytest.raises(ImageLoadError, match="empty file"):
        load_rgb(tmp_path / "x.png", data=b"")
    with pytest.raises(ImageLoadError, match=r"x\.png: not an image"):
        load_rgb(tmp_path / "x.png", data=b"garbage")


def test_items_received_ahead_keep_their_order_errors_and_early_stops() -> None:
    """The thread that takes worker items ahead of the model: same items in the same order, a
    worker's error raised where the item would have been, and a caller that stops early leaves
    nothing running."""
    import threading

    from teacher.cache import _received_ahead

    assert list(_received_ahead(iter(range(50)), depth=4)) == list(range(50))
    assert list(_received_ahead(iter([]), depth=3)) == []

    def failing():
        yield from range(3)
        raise OSError("worker 1 died")

    got = []
    with pytest.raises(OSError, match="worker 1 died"):
        for item in _received_ahead(failing(), depth=8):
            got.append(item)
    assert got == [0, 1, 2]
    taken = []

    def counted():
        for i in range(1000):
            taken.append(i)
            yield i

    stream = _received_ahead(counted(), depth=5)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert len(taken) <= 3 + 5 + 1  # no more than the depth ahead, and then nothing
    assert not any(t.name.startswith("agiqa-label-receive") for t in threading.enumerate())
