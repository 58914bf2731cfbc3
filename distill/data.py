"""Image datasets and their splits, read by the distiller and handed to the teacher to label.

A dataset is a list of :class:`teacher.records.ImageRecord` sorted by ``image_id`` (the image's path relative to
the dataset root, in posix form), read from one of the layouts of ``DATASET_LAYOUTS`` (kind ->
reader and its defaults) that a :class:`DatasetSpec` names:

* ``agiqa3k``: AGIQA-3K. ``data.csv`` (columns name, prompt, adj1, adj2, style, mos_quality,
  std_quality, mos_align, std_align; 2,982 rows, MOS on a 0-5 scale) beside the image folder
  (``AGIQA-3K/`` in the released archive; ``images/`` or the root itself are accepted too).
* ``aigcqa20k``: AIGIQA-20K / AIGCQA-30K-Image (NTIRE 2024 AIGC image track).
  ``info_train.csv`` (name, prompt, mos; 14,000 rows, MOS 0-5) with images under ``train/``;
  ``info_val.csv`` / ``info_test.csv`` (name, prompt; labels withheld) with images under
  ``val/`` and ``test/``. Copies exist with and without the header row; both are read.
* ``folder``: every image file under ``root`` (recursive), no MOS.
* ``csv``: a CSV with a ``path`` column (relative to the CSV's folder or to ``root``) and
  optional ``mos`` and ``prompt`` columns.

Every problem raises one :class:`DatasetError` whose one-line message names the file and the fix.
Reading a dataset decodes no image: that comes later (for labelling,
:func:`teacher.records.iter_images`), always through :func:`edge_runtime.images.load_rgb`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from _agiqa.atomic import atomic_write_json
from edge_runtime.images import IMAGE_SUFFIXES, find_images
from teacher.records import ImageRecord

__all__ = ["DATASET_KINDS", "DATASET_LAYOUTS", "SPLIT_NAMES", "DatasetError", "DatasetLayout", "DatasetSpec",
           "dataset_layout", "dataset_spec_for", "load_records", "load_splits", "save_splits", "split_records"]

SPLIT_NAMES = ("train", "val", "test")
_SPLITS_FORMAT = "agiqa-edge/splits"
_SPLITS_VERSION = 1
_SHOW_MISSING = 5  # how many missing images an error message names


class DatasetError(ValueError):
    """A dataset could not be read. The message is one line: the file, the problem, the fix."""


@dataclass
class DatasetSpec:
    """Where a dataset lives and how to read it (see the module docstring for the layouts)."""

    kind: str  # one of DATASET_KINDS: "agiqa3k", "aigcqa20k", "folder", "csv"
    root: str | Path  # dataset folder; for kind "csv" it may also be the CSV file itself
    annotations: str | Path | None = None  # CSV (relative: to root if there); None: data.csv / info_train.csv
    mos_column: str | None = None  # None: "mos_quality" (agiqa3k), "mos" (aigcqa20k, csv)
    image_column: str | None = None  # None: "name" (agiqa3k, aigcqa20k), "path" (csv)


def load_records(spec: DatasetSpec) -> list[ImageRecord]:
    """Read the dataset ``spec`` describes with its kind's reader; records sorted by ``image_id``.

    Raises:
        DatasetError: unknown kind, missing root or CSV, missing column, unparsable MOS,
            duplicate ids, listed images that do not exist, or an empty dataset.
    """
    layout = dataset_layout(spec.kind)
    root = Path(spec.root).expanduser().resolve()
    annotations = spec.annotations
    if layout.root_may_be_annotations and annotations is None and root.suffix.lower() == ".csv":
        root, annotations = root.parent, root
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder; "
                           f"pass the folder that holds the {spec.kind} dataset")
    records, where = layout.read(spec, layout, root, annotations)
    if not records:
        raise DatasetError(f"{where}: the dataset is empty (no images found); check the path "
                           f"and the kind ({spec.kind!r})")
    records.sort(key=lambda r: r.image_id)
    duplicates = sorted({a.image_id for a, b in zip(records, records[1:]) if a.image_id == b.image_id})
    if duplicates:
        raise DatasetError(f"{where}: {len(duplicates)} image ids appear more than once "
                           f"(first: {', '.join(duplicates[:_SHOW_MISSING])}); remove the duplicate rows")
    return records


def _read_folder(spec: DatasetSpec, layout: DatasetLayout, root: Path,
                 annotations: str | Path | None) -> tuple[list[ImageRecord], Path]:
    """Every image file under ``root`` (recursive), no MOS."""
    records = [ImageRecord(rel, path, rel) for path in find_images(root)
               for rel in [path.relative_to(root).as_posix()]]
    return records, root


def _read_annotated(spec: DatasetSpec, layout: DatasetLayout, root: Path,
                    annotations: str | Path | None) -> tuple[list[ImageRecord], Path]:
    """The images a CSV lists (with their MOS and prompt), found in ``layout.image_dirs``."""
    csv_path = _annotations_path(spec.kind, layout, root, annotations)
    return _csv_records(spec, layout, root, csv_path), csv_path


# Readers take (spec, layout, root, annotations) and return (records, the file errors name).
Reader = Callable[[DatasetSpec, "DatasetLayout", Path, "str | Path | None"], tuple[list[ImageRecord], Path]]


@dataclass(frozen=True)
class DatasetLayout:
    """How one kind of dataset is read: its reader and the defaults that reader applies."""

    read: Reader
    annotations: str | None = None  # default CSV file name under root (None: no default CSV)
    image_column: str = "path"  # default column of image file names
    mos_column: str = "mos"  # default MOS column
    mos_required: bool = False  # False where some official CSVs carry no MOS (withheld test labels)
    # Folders searched for the listed images, in order: relative to root, "{split}" = the CSV's
    # info_<split> stem, "{csv_folder}" = the CSV's own folder.
    image_dirs: tuple[str, ...] = ()
    one_image_folder: bool = False  # all images sit in one of image_dirs (the one most rows name)
    headerless_columns: tuple[str, ...] | None = None  # column names when the CSV has no header row
    root_may_be_annotations: bool = False  # ``root`` may be the CSV file itself
    detect: Callable[[Path], bool] | None = None  # does a folder look like this kind (dataset_spec_for)


def _has_aigcqa_info(root: Path) -> bool:
    return any(root.glob("info_*.csv")) or any(root.glob("*/info_*.csv"))


# kind -> layout; DatasetSpec.kind and --kind take these names. Adding a dataset = one entry
# here plus, where no reader fits, its reader. dataset_spec_for guesses in this order.
DATASET_LAYOUTS: dict[str, DatasetLayout] = {
    "agiqa3k": DatasetLayout(_read_annotated, "data.csv", "name", "mos_quality", mos_required=True,
                             image_dirs=("AGIQA-3K", "AGIQA-3k", "images", "Images", "image", "."),
                             one_image_folder=True, detect=lambda root: (root / "data.csv").is_file()),
    "aigcqa20k": DatasetLayout(_read_annotated, "info_train.csv", "name", "mos",
                               image_dirs=("{split}", "images", "."), one_image_folder=True,
                               # Column order of the header-less AIGCQA-30K-Image info CSVs.
                               headerless_columns=("name", "prompt", "mos"), detect=_has_aigcqa_info),
    "folder": DatasetLayout(_read_folder),
    "csv": DatasetLayout(_read_annotated, image_dirs=("{csv_folder}", "."), root_may_be_annotations=True),
}
DATASET_KINDS = tuple(DATASET_LAYOUTS)


def dataset_layout(kind: str) -> DatasetLayout:
    """``DATASET_LAYOUTS[kind]``, or a DatasetError listing the kinds there are."""
    if kind not in DATASET_LAYOUTS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}")
    return DATASET_LAYOUTS[kind]


def dataset_spec_for(path: str | Path, kind: str | None = None) -> DatasetSpec:
    """The spec a command line means by ``path``: a ``.csv`` file (``path,mos`` rows relative to
    it), or a dataset root whose kind is ``kind`` or guessed from its files (the first layout
    whose ``detect`` accepts it: AGIQA-3k has ``data.csv``, AIGCQA-20k ``info_*.csv``; anything
    else is a plain image folder)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return DatasetSpec(kind="csv", root=str(path.parent), annotations=str(path))
    if kind is None:
        kind = next((name for name, layout in DATASET_LAYOUTS.items()
                     if layout.detect is not None and layout.detect(path)), "folder")
    return DatasetSpec(kind=kind, root=str(path))


def _annotations_path(kind: str, layout: DatasetLayout, root: Path, annotations: str | Path | None) -> Path:
    if annotations is None:
        if layout.annotations is None:
            raise DatasetError(f"kind {kind!r} needs annotations=PATH.csv (or root pointing at the CSV); "
                               f"none given for {root}")
        annotations = root / layout.annotations
    path = Path(annotations).expanduser()
    if not path.is_absolute():  # relative: to the dataset root when it is there, else as given
        path = root / path if (root / path).is_file() else path.absolute()
    if not path.is_file():
        raise DatasetError(f"annotation file {path} does not exist; download it with the dataset "
                           f"or pass annotations=PATH")
    return path.resolve()


def _read_csv(csv_path: Path, *, headerless_columns: Sequence[str] | None
              ) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Rows of ``csv_path`` as (line number, {column: value}). A first row whose first cell is an
    image file name is data, not a header, when ``headerless_columns`` names the columns."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{csv_path}: not UTF-8 text ({exc.reason}); save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}: malformed CSV ({exc}); fix the file") from None
    if not rows:
        raise DatasetError(f"{csv_path}: the CSV is empty; it needs a header row and one row per image")
    first = rows[0][1]
    if headerless_columns is not None and Path(first[0].strip()).suffix.lower() in IMAGE_SUFFIXES:
        header = list(headerless_columns[: len(first)])
    else:
        header = [cell.strip() for cell in first]
        rows = rows[1:]
    return header, [(line, dict(zip(header, (c.strip() for c in row)))) for line, row in rows]


def _csv_records(spec: DatasetSpec, layout: DatasetLayout, root: Path, csv_path: Path) -> list[ImageRecord]:
    image_col = spec.image_column or layout.image_column
    mos_col = spec.mos_column or layout.mos_column
    header, rows = _read_csv(csv_path, headerless_columns=layout.headerless_columns)
    found = ", ".join(header)
    if image_col not in header:
        raise DatasetError(f"{csv_path}: no column {image_col!r} (columns found: {found}); "
                           f"pass image_column=NAME")
    has_mos = mos_col in header
    if not has_mos and (layout.mos_required or spec.mos_column is not None):
        raise DatasetError(f"{csv_path}: no MOS column {mos_col!r} (columns found: {found}); "
                           f"pass mos_column=NAME")
    dirs = _image_dirs(layout, root, csv_path)
    if layout.one_image_folder:
        # Benchmark archives keep all images in one folder: the one holding most of the first rows.
        probe = [row.get(image_col) or "" for _, row in rows[:20]]
        dirs = [max(dirs, key=lambda d: sum(bool(n) and (d / n).is_file() for n in probe))]
    records, missing = [], []
    for line, row in rows:
        name = row.get(image_col) or ""
        if not name:
            raise DatasetError(f"{csv_path} line {line}: empty {image_col!r} cell; fill it or drop the row")
        mos = _parse_mos(row.get(mos_col), csv_path, line, mos_col) if has_mos else None
        path = next((d / name for d in dirs if (d / name).is_file()), None)
        if path is None:
            missing.append(name)
            continue
        path = Path(os.path.abspath(path))  # absolute, ".." removed, symlinks kept
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
        records.append(ImageRecord(rel, path, rel, mos, row.get("prompt") or None))
    if missing:
        looked = ", ".join(str(d) for d in dirs)
        raise DatasetError(f"{csv_path}: {len(missing)} of {len(rows)} listed images do not exist "
                           f"(looked in {looked}; first: {', '.join(missing[:_SHOW_MISSING])}); "
                           f"point root at the folder holding the images or remove those rows")
    return records


def _image_dirs(layout: DatasetLayout, root: Path, csv_path: Path) -> list[Path]:
    # info_train.csv -> train/, info_val.csv -> val/ (AIGCQA-30K-Image layout).
    split = csv_path.stem[len("info_"):] if csv_path.stem.startswith("info_") else ""
    names = [d.format(split=split, csv_folder=csv_path.parent) for d in layout.image_dirs
             if split or "{split}" not in d]
    return [Path(os.path.abspath(root / n)) for n in names if (root / n).is_dir()]


def _parse_mos(value: str | None, csv_path: Path, line: int, column: str) -> float:
    try:
        mos = float(value or "")
    except ValueError:
        mos = math.nan
    if not math.isfinite(mos):
        raise DatasetError(f"{csv_path} line {line}: MOS {value!r} in column {column!r} is not a "
                           f"number; fix the cell or drop the row")
    return mos


def split_records(records: Sequence[ImageRecord], *, val_fraction: float = 0.1,
                  test_fraction: float = 0.1, seed: int = 0) -> dict[str, list[str]]:
    """Split image ids into ``{"train", "val", "test"}``, each list sorted.

    Each image's place is decided by a hash of ``(seed, image_id)``, so the split is the same
    for a seed whatever the input order, and adding images moves few existing ones. ``val`` and
    ``test`` get ``ceil(n * fraction)`` images (at least one when the fraction is positive).
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}={value} must be in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training images")
    ids = sorted(r.image_id for r in records)
    if len(set(ids)) != len(ids):
        raise DatasetError("split_records: duplicate image ids in the records; load them with load_records")
    n = len(ids)
    n_test = math.ceil(n * test_fraction - 1e-9)
    n_val = math.ceil(n * val_fraction - 1e-9)
    if n - n_test - n_val < 1:
        raise DatasetError(f"split_records: {n} images are too few for val={n_val} and test={n_test}; "
                           f"add images or lower the fractions")
    order = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}\0{i}".encode()).hexdigest())
    return {"train": sorted(order[n_test + n_val:]), "val": sorted(order[n_test:n_test + n_val]),
            "test": sorted(order[:n_test])}


def save_splits(path: str | Path, splits: dict[str, list[str]], seed: int) -> Path:
    """Write ``splits`` (from :func:`split_records`) and its seed to ``path`` as JSON, atomically."""
    _check_splits(splits, Path(path))
    payload = {"format": _SPLITS_FORMAT, "format_version": _SPLITS_VERSION, "seed": int(seed),
               "counts": {k: len(splits[k]) for k in SPLIT_NAMES},
               "splits": {k: list(splits[k]) for k in SPLIT_NAMES}}
    return atomic_write_json(path, payload)


def load_splits(path: str | Path) -> dict[str, list[str]]:
    """Read splits written by :func:`save_splits`: ``{"train", "val", "test"} -> image ids``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"splits file {path} does not exist; create it with save_splits")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc}); recreate it with save_splits") from None
    if not isinstance(payload, dict) or payload.get("format") != _SPLITS_FORMAT:
        raise DatasetError(f"{path}: not a splits file (format {_SPLITS_FORMAT!r} expected); "
                           f"recreate it with save_splits")
    if payload.get("format_version") != _SPLITS_VERSION:
        raise DatasetError(f"{path}: splits format version {payload.get('format_version')} is not "
                           f"{_SPLITS_VERSION}; recreate it with save_splits")
    splits = payload.get("splits")
    _check_splits(splits, path)
    return {k: list(splits[k]) for k in SPLIT_NAMES}


def _check_splits(splits: object, path: Path) -> None:
    if not isinstance(splits, dict) or set(splits) != set(SPLIT_NAMES):
        raise DatasetError(f"{path}: splits must have exactly the keys {', '.join(SPLIT_NAMES)}")
    seen: set[str] = set()
    for name in SPLIT_NAMES:
        ids = splits[name]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DatasetError(f"{path}: split {name!r} must be a list of image ids")
        overlap = seen.intersection(ids)
        if overlap or len(set(ids)) != len(ids):
            raise DatasetError(f"{path}: split {name!r} repeats image ids (e.g. {sorted(overlap or ids)[0]}); "
                               f"recreate the splits with split_records")
        seen.update(ids)
