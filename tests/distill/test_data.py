"""Datasets: the four layouts, their errors, splits and safe decoding (all under tmp_path)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from distill.data import DatasetError, DatasetSpec, load_records, load_splits, save_splits, split_records
from teacher.records import ImageRecord, iter_images

AGIQA_HEADER = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align",
                "std_align"]


def write_csv(path: Path, header: list[str] | None, rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def make_agiqa3k(write_image, root: Path, image_dir: str = "AGIQA-3K") -> None:
    rows = []
    for i, name in enumerate(["sd1.5_normal_000.jpg", "AttnGAN_normal_001.jpg", "xl2.2_lowstep_002.jpg"]):
        write_image(root / image_dir / name, seed=i)
        rows.append([name, f"prompt {i}, anime style", "", "", "anime style", 0.5 + i, 0.3, 4.0 - i, 0.4])
    write_csv(root / "data.csv", AGIQA_HEADER, rows)


# --- AGIQA-3K ---------------------------------------------------------------------------------

def test_agiqa3k_reads_data_csv_and_image_folder(tmp_path: Path, write_image) -> None:
    make_agiqa3k(write_image, tmp_path)
    records = load_records(DatasetSpec("agiqa3k", tmp_path))
    assert [r.image_id for r in records] == ["AGIQA-3K/AttnGAN_normal_001.jpg", "AGIQA-3K/sd1.5_normal_000.jpg",
                                             "AGIQA-3K/xl2.2_lowstep_002.jpg"]
    first = records[0]
    assert first.mos == pytest.approx(1.5) and first.prompt == "prompt 1, anime style"
    assert first.path == tmp_path.resolve() / "AGIQA-3K" / "AttnGAN_normal_001.jpg" and first.path.is_absolute()
    assert first.relpath == first.image_id
    aligned = load_records(DatasetSpec("agiqa3k", tmp_path, mos_column="mos_align"))
    assert aligned[0].mos == pytest.approx(3.0)


def test_agiqa3k_images_beside_the_csv(tmp_path: Path, write_image) -> None:
    make_agiqa3k(write_image, tmp_path, image_dir=".")
    assert load_records(DatasetSpec("agiqa3k", tmp_path))[0].image_id == "AttnGAN_normal_001.jpg"


# --- AIGCQA-20K (AIGCQA-30K-Image) ------------------------------------------------------------

@pytest.mark.parametrize("header", [True, False])
def test_aigcqa20k_train_csv_with_or_without_header(tmp_path: Path, header: bool, write_image) -> None:
    names = ["DALLE2_0000.png", "SDXL_0003.png", "MJ_0010.png"]
    for i, name in enumerate(names):
        write_image(tmp_path / "train" / name, seed=i)
    rows = [[name, f"a prompt, with comma {i}", 1.25 + i] for i, name in enumerate(names)]
    write_csv(tmp_path / "info_train.csv", ["name", "prompt", "mos"] if header else None, rows)
    records = load_records(DatasetSpec("aigcqa20k", tmp_path))
    assert [r.image_id for r in records] == ["train/DALLE2_0000.png", "train/MJ_0010.png", "train/SDXL_0003.png"]
    assert [r.mos for r in records] == [1.25, 3.25, 2.25]
    assert records[0].prompt == "a prompt, with comma 0"


def test_aigcqa20k_val_csv_has_no_mos(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "val" / "DALLE2_0025.png", seed=0)
    write_csv(tmp_path / "info_val.csv", None, [["DALLE2_0025.png", "oil painting"]])
    records = load_records(DatasetSpec("aigcqa20k", tmp_path, annotations="info_val.csv"))  # relative to root
    assert records == [ImageRecord("val/DALLE2_0025.png", tmp_path.resolve() / "val" / "DALLE2_0025.png",
                                   "val/DALLE2_0025.png", None, "oil painting")]


# --- folder and csv ---------------------------------------------------------------------------

def test_folder_is_recursive_and_ignores_other_files(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "b" / "x.PNG", seed=0)
    write_image(tmp_path / "a.jpeg", seed=1)
    write_image(tmp_path / "c" / "d" / "y.webp", seed=2)
    write_image(tmp_path / ".hidden" / "z.png", seed=3)
    (tmp_path / "notes.txt").write_text("not an image")
    records = load_records(DatasetSpec("folder", tmp_path))
    assert [r.image_id for r in records] == ["a.jpeg", "b/x.PNG", "c/d/y.webp"]
    assert all(r.mos is None and r.prompt is None for r in records)


def test_csv_paths_relative_to_csv_folder_or_root(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "imgs" / "one.png", seed=0)
    write_image(tmp_path / "labels" / "two.png", seed=1)
    csv_path = write_csv(tmp_path / "labels" / "list.csv", ["path", "mos"], [["imgs/one.png", 2], ["two.png", 3.5]])
    records = load_records(DatasetSpec("csv", tmp_path, annotations=csv_path))
    assert [(r.image_id, r.mos) for r in records] == [("imgs/one.png", 2.0), ("labels/two.png", 3.5)]
    unlabeled = write_csv(tmp_path / "plain.csv", ["path"], [["imgs/one.png"]])
    assert load_records(DatasetSpec("csv", unlabeled))[0].mos is None  # root may be the CSV itself


# --- errors -----------------------------------------------------------------------------------

def error_of(spec: DatasetSpec, match: str) -> str:
    """The one-line DatasetError that loading ``spec`` raises; it must match ``match``."""
    with pytest.raises(DatasetError, match=match) as info:
        load_records(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_root_and_csv(tmp_path: Path) -> None:
    error_of(DatasetSpec("folder", tmp_path / "nope"), "does not exist")
    message = error_of(DatasetSpec("agiqa3k", tmp_path), "does not exist")
    assert "data.csv" in message and "does not exist" in message
    error_of(DatasetSpec("csv", tmp_path), "annotations")
    error_of(DatasetSpec("koniq", tmp_path), "unknown dataset kind")


def test_missing_column_lists_the_columns_found(tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv", ["name", "prompt", "score"], [["a.jpg", "p", 1]])
    message = error_of(DatasetSpec("agiqa3k", tmp_path), "'mos_quality'")
    assert "'mos_quality'" in message and "name, prompt, score" in message and "data.csv" in message


def test_unparsable_mos_names_the_line(tmp_path: Path, write_image) -> None:
    make_agiqa3k(write_image, tmp_path)
    rows = list(csv.reader(open(tmp_path / "data.csv", encoding="utf-8")))
    rows[2][5] = "n/a"
    write_csv(tmp_path / "data.csv", rows[0], rows[1:])
    message = error_of(DatasetSpec("agiqa3k", tmp_path), "line 3")
    assert "line 3" in message and "'n/a'" in message


def test_duplicate_ids(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "a.png", seed=0)
    csv_path = write_csv(tmp_path / "l.csv", ["path"], [["a.png"], ["a.png"]])
    error_of(DatasetSpec("csv", tmp_path, annotations=csv_path), "more than once")


def test_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images")
    error_of(DatasetSpec("folder", tmp_path), "empty")


def test_missing_images_are_counted_not_first_only(tmp_path: Path, write_image) -> None:
    make_agiqa3k(write_image, tmp_path)
    rows = list(csv.reader(open(tmp_path / "data.csv", encoding="utf-8")))
    extra = [[f"gone_{i}.jpg", "p", "", "", "", 1, 1, 1, 1] for i in range(7)]
    write_csv(tmp_path / "data.csv", rows[0], rows[1:] + extra)
    message = error_of(DatasetSpec("agiqa3k", tmp_path), "7 of 10 listed images do not exist")
    assert "7 of 10 listed images do not exist" in message
    assert "gone_0.jpg" in message and "gone_6.jpg" not in message  # the first few only


# --- splits -----------------------------------------------------------------------------------

def fake_records(n: int) -> list[ImageRecord]:
    return [ImageRecord(f"img{i:03d}.png", Path(f"/d/img{i:03d}.png"), f"img{i:03d}.png") for i in range(n)]


def test_splits_are_deterministic_and_order_independent(tmp_path: Path) -> None:
    records = fake_records(50)
    splits = split_records(records, seed=3)
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert split_records(shuffled, seed=3) == splits
    assert split_records(records, seed=4) != splits
    assert {k: len(v) for k, v in splits.items()} == {"train": 40, "val": 5, "test": 5}
    everything = splits["train"] + splits["val"] + splits["test"]
    assert sorted(everything) == [r.image_id for r in records]
    assert split_records(fake_records(5), val_fraction=0.1, test_fraction=0.1)["val"]  # at least one
    path = save_splits(tmp_path / "splits.json", splits, seed=3)
    assert load_splits(path) == splits
    assert json.loads(path.read_text())["seed"] == 3


def test_split_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"val_fraction \+ test_fraction = 1\.1 leaves no training images"):
        split_records(fake_records(10), val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(DatasetError, match="too few"):
        split_records(fake_records(2))
    with pytest.raises(DatasetError, match="does not exist"):
        load_splits(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_splits(tmp_path / "bad.json")
    with pytest.raises(DatasetError, match="repeats"):
        save_splits(tmp_path / "s.json", {"train": ["a"], "val": ["a"], "test": []}, seed=0)


# --- decoding ---------------------------------------------------------------------------------

def test_iter_images_reports_bad_files(tmp_path: Path, make_image_folder) -> None:
    good = make_image_folder(tmp_path, n_good=3)
    records = load_records(DatasetSpec("folder", tmp_path))
    results = {r.image_id: (image, reason) for r, image, reason in iter_images(records)}
    assert len(results) == 6
    for name in good:
        image, reason = results[name]
        assert reason is None and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert "empty" in results["img03b.png"][1]
    assert "not an image" in results["img06b.jpg"][1]
    assert "truncated" in results["img08b.jpg"][1]
    assert all(results[n][0] is None for n in ("img03b.png", "img06b.jpg", "img08b.jpg"))


def test_dataset_spec_for_guesses_the_kind(tmp_path: Path) -> None:
    from distill.data import dataset_spec_for

    (tmp_path / "agiqa").mkdir()
    (tmp_path / "agiqa" / "data.csv").write_text("name,mos_quality\n")
    (tmp_path / "aigc").mkdir()
    (tmp_path / "aigc" / "info_train.csv").write_text("name,prompt,mos\n")
    (tmp_path / "plain").mkdir()
    assert dataset_spec_for(tmp_path / "agiqa").kind == "agiqa3k"
    assert dataset_spec_for(tmp_path / "aigc").kind == "aigcqa20k"
    assert dataset_spec_for(tmp_path / "plain").kind == "folder"
    assert dataset_spec_for(tmp_path / "plain", "csv").kind == "csv"
    spec = dataset_spec_for(tmp_path / "agiqa" / "data.csv")
    assert (spec.kind, spec.annotations) == ("csv", str(tmp_path / "agiqa" / "data.csv"))


def test_dataset_layouts_are_a_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_image) -> None:
    """An unknown kind is refused with every registered kind named; a new kind is one entry
    (here: a layout that reads a CSV named scores.csv, with a ``file``/``score`` header, found by
    dataset_spec_for)."""
    from distill import data

    message = error_of(DatasetSpec("koniq", tmp_path), "unknown dataset kind")
    assert "'koniq'" in message and ", ".join(data.DATASET_LAYOUTS) in message
    assert data.DATASET_KINDS == ("agiqa3k", "aigcqa20k", "folder", "csv")
    layout = data.DatasetLayout(data._read_annotated, "scores.csv", "file", "score", mos_required=True,
                                image_dirs=("pics",), detect=lambda root: (root / "scores.csv").is_file())
    monkeypatch.setitem(data.DATASET_LAYOUTS, "scores", layout)
    write_image(tmp_path / "pics" / "b.png", 1)
    write_image(tmp_path / "pics" / "a.png", 2)
    write_csv(tmp_path / "scores.csv", ["file", "score"], [["b.png", 2.5], ["a.png", 4]])
    spec = data.dataset_spec_for(tmp_path)
    assert spec.kind == "scores"
    records = load_records(spec)
    assert [(r.image_id, r.mos) for r in records] == [("pics/a.png", 4.0), ("pics/b.png", 2.5)]
