"""Run configuration: typed dataclasses, loaded from YAML/JSON and overridden by ``key=value``.

The defaults *are* the embedded demo: ``agiqa-distill run`` with no arguments generates a small
image set with a MOS, trains the tiny MA-AGIQA teacher on it, labels, distils the default student and
evaluates.
Real datasets and weights are a config file away (``configs/agiqa3k.yaml``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

__all__ = ["DataConfig", "TeacherSection", "TeacherTrainConfig", "StudentSection", "TrainConfig",
           "LossConfig", "RunConfig", "load_config", "load_resume_config", "apply_overrides",
           "coerce_value", "ConfigError"]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the fix."""


@dataclass
class DataConfig:
    kind: str = "demo"  # demo | agiqa3k | aigcqa20k | folder | csv
    root: str | None = None  # dataset folder (demo: generated into RUN_DIR/demo_images)
    annotations: str | None = None  # CSV with names and MOS (defaults per kind)
    mos_column: str | None = None  # override the MOS column (agiqa3k: mos_quality)
    image_column: str | None = None  # override the image-name column
    val_fraction: float = 0.1  # held out for model selection
    test_fraction: float = 0.2  # held out for the final metrics (MA-AGIQA code: 70/10/20)
    split_seed: int = 20  # the official code's split seed
    num_workers: int = 0  # DataLoader workers decoding images (0 = preload in RAM)
    demo_images: int = 1400  # demo only: generated images with MOS (980 train the teacher; fits 5 CPU minutes)
    demo_unlabeled: int = 1200  # demo only: extra generated views without MOS at photo sizes, labelled by the teacher
    unlabeled: str | None = None  # extra images without MOS (folder, dataset root or CSV): the teacher
    #                               labels them and the student trains on them too (but unlabeled_holdout)
    unlabeled_kind: str | None = None  # folder | agiqa3k | aigcqa20k | csv; default: guessed from the files
    unlabeled_holdout: float = 0.1  # seeded slice of the unlabeled pool never trained on: student vs teacher
    #                                 where no MOS exists (reported beside the test split)


@dataclass
class TeacherTrainConfig:
    """How ``train-teacher`` trains MA-AGIQA. The defaults are the official recipe
    (wangpuyi/MA-AGIQA ``configs/base.yaml``); :func:`demo_teacher_train` is the demo's."""

    epochs: int = 30  # official n_epoch
    batch_size: int = 8  # official batch_size
    lr: float = 1e-5  # Adam learning rate
    weight_decay: float = 1e-5
    t_max: int = 50  # CosineAnnealingLR T_max, stepped per batch as the official loop does; 0: the whole run
    prob_aug: float = 0.7  # probability of the rotation and of the flip
    seed: int = 20  # official setup_seed(20)
    device: str | None = None
    # From random weights (no ImageNet ViT: the demo), the MoE over uninformative semantic vectors
    # starves the quality branch. Two stages fix it: the MANIQA branch alone against MOS first (its own
    # pooled score, as MANIQA is trained), then the fusion. 0 / False: the official single stage.
    maniqa_epochs: int = 0  # stage 1: epochs of the MANIQA branch alone (warmup + cosine, AdamW)
    maniqa_lr: float = 3e-4  # stage 1 peak learning rate
    freeze_maniqa: bool = False  # stage 2 trains the fusion only, on the fixed quality features


# The official MA-AGIQA split that ``train-teacher`` makes: 70 / 10 / 20 % train / val / test, seed 20.
TEACHER_VAL_FRACTION = 0.1
TEACHER_TEST_FRACTION = 0.2
TEACHER_SPLIT_SEED = 20


def demo_teacher_train() -> TeacherTrainConfig:
    """The demo teacher starts from random weights (no ImageNet ViT): its MANIQA branch first learns
    quality alone (16 epochs, the official rotations and flips: on content of every kind it is
    still learning at 8, validation SRCC 0.58 vs 0.81 at 16; a peak learning rate of 1e-3 diverges),
    then the MoE fusion learns to use it (10 quick epochs on the fixed quality features, Adam 1e-3:
    it is at its best within 3)."""
    return dataclasses.replace(TeacherTrainConfig(), epochs=10, lr=1e-3, t_max=0,  # the official recipe but
                               maniqa_epochs=16, freeze_maniqa=True)  # these: batch, augmentation, seed as official


@dataclass
class TeacherSection:
    path: str | None = None  # teacher folder with teacher.json; None + demo = build the tiny teacher
    cache: str | None = None  # label cache folder; default RUN_DIR/labels
    batch_size: int = 8  # images per teacher forward
    device: str | None = None  # cuda | cpu; default cuda when available
    trust_remote_code: bool = False  # run the MLLM folder's own code: only for model types neither ported
    #                                  here (mPLUG-Owl2 is) nor shipped by transformers
    allow_pickle: bool = False  # allow a pickled MA-AGIQA checkpoint (arbitrary code execution)
    train: TeacherTrainConfig = field(default_factory=demo_teacher_train)  # demo only: training of
    #                               the tiny teacher against the demo MOS when teacher.path is unset


@dataclass
class StudentSection:
    variant: str = "mnv3s"  # see student.list_students()
    overrides: dict[str, Any] = field(default_factory=dict)  # StudentConfig fields, e.g. input_size


@dataclass
class TrainConfig:
    epochs: int = 8  # demo: 8 passes over 1,520 images (980 train with MOS + 540 teacher-labelled views)
    batch_size: int = 16  # global batch (split across DDP ranks); demo: 16 beat 8 and 32 (0.89 vs 0.88 / 0.86)
    lr: float = 4e-3  # AdamW peak learning rate (demo, from random weights: 2e-3 0.84, 4e-3 0.86, 8e-3 0.86)
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05  # linear warmup, then cosine to min_lr
    min_lr: float = 1e-5
    grad_clip: float = 2.0  # max gradient norm
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    seed: int = 0
    deterministic: bool = True  # deterministic algorithms (CPU runs are bitwise repeatable)
    hflip: bool = True  # horizontal flips only: blur, noise, JPEG or colour jitter change the label
    checkpoint_every: int = 0  # also checkpoint every N steps (0: every epoch only)
    device: str | None = None  # default cuda when available
    threads: int | None = None  # torch CPU threads (default: torch's choice)


LOSS_NAMES = ("score", "mos", "semantic", "quality", "gate", "rank")  # the weighted terms of LossConfig


@dataclass
class LossConfig:
    score: float = 1.0  # MSE to the teacher score (standardised)
    # The defaults are the demo's: a student is worth its fidelity to the teacher, and the demo's
    # MOS (which ranks scrambles the random tiny MLLM cannot see) and semantic vectors (of that
    # MLLM) pull it away from the teacher: student vs teacher 0.69 with mos 0.5 / semantic 0.5,
    # 0.80 with 0 / 0.1 (0.49 with semantic 0). The real-data configs set mos 0.5, semantic 0.5.
    mos: float = 0.0  # MSE to MOS where the dataset has it
    semantic: float = 0.1  # semantic-vector KD in the compressed space (MSE + cosine)
    quality: float = 0.5  # quality-feature KD in the compressed space (MSE + cosine)
    gate: float = 0.2  # KL(teacher gate || student gate)
    rank: float = 0.5  # pairwise logistic ranking loss on teacher order
    gate_temperature: float = 1.0
    semantic_components: int = 128  # PCA dims per semantic vector (<= train images - 1)
    quality_components: int = 64  # PCA dims of the quality feature


@dataclass
class RunConfig:
    out_dir: str = "runs/demo"  # the run folder (relative paths resolve against the current folder)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    student: StudentSection = field(default_factory=StudentSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build and validate (types, ranges, choices); raises :class:`ConfigError`."""
        cfg = _build(cls, data, "")
        _check(cfg)
        return cfg

    @property
    def is_demo(self) -> bool:
        return self.data.kind == "demo"


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """``data`` -> ``cls``, every value coerced to its field's type (see :func:`coerce_value`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(prefix + k for k in unknown)}; "
                          f"valid under {prefix.rstrip('.') or 'top level'}: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        sub = hints[key]
        kwargs[key] = (_build(sub, value, f"{prefix}{key}.") if is_dataclass(sub)
                       else coerce_value(value, sub, prefix + key))
    return cls(**kwargs)


def coerce_value(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the type ``hint`` (int, float, bool, str, ``X | None``, dict, list, tuple).

    YAML reads ``1e-05`` (no dot) as a string and ``--set`` values arrive as YAML, so numbers
    given as strings are parsed; anything else of the wrong type is a :class:`ConfigError` that
    names the key, the value and the expected type.
    """
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(get_args(hint)):
            return None
        if len(options) == 1:
            return coerce_value(value, options[0], key)
        return value
    if hint is Any:
        return value

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{key}={value!r}: expected {expected}")

    if hint is bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise fail("an integer") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise fail("a number, e.g. 0.001 or 1e-3") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail("a finite number, e.g. 0.001 or 1e-3")
        return float(value)
    if hint is str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # a folder may be named 2024
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise fail("a mapping, e.g. {input_size: [160, 160]}")
        return value
    if hint is list or origin is list:
        if not isinstance(value, list):
            raise fail("a list, e.g. [1, 2]")
        return value
    if origin is tuple:
        args = get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise fail("a list" if Ellipsis in args else f"a list of {len(args)} values")
        if Ellipsis in args:
            return tuple(coerce_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise fail(f"a list of {len(args)} values")
        return tuple(coerce_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    return value


# Ranges checked after the types: (what the rule says, the rule).
_COUNT = ("an integer >= 1", lambda v: v >= 1)
_NON_NEGATIVE = ("a value >= 0", lambda v: v >= 0)
_POSITIVE = ("a value > 0", lambda v: v > 0)
_FRACTION = ("a fraction in [0, 1)", lambda v: 0 <= v < 1)
_RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "data.val_fraction": _FRACTION, "data.test_fraction": _FRACTION, "data.unlabeled_holdout": _FRACTION,
    "data.split_seed": _NON_NEGATIVE, "data.num_workers": _NON_NEGATIVE, "data.demo_images": _COUNT,
    "teacher.batch_size": _COUNT,
    "train.epochs": _COUNT, "train.batch_size": _COUNT, "train.lr": _POSITIVE,
    "train.weight_decay": _NON_NEGATIVE, "train.warmup_fraction": _FRACTION, "train.min_lr": _NON_NEGATIVE,
    "train.grad_clip": _POSITIVE, "train.seed": _NON_NEGATIVE, "train.checkpoint_every": _NON_NEGATIVE,
    "train.threads": _COUNT,
    **{f"loss.{name}": _NON_NEGATIVE for name in LOSS_NAMES},
    "loss.gate_temperature": _POSITIVE, "loss.semantic_components": _COUNT, "loss.quality_components": _COUNT,
    "teacher.train.epochs": _COUNT, "teacher.train.batch_size": _COUNT, "teacher.train.lr": _POSITIVE,
    "teacher.train.weight_decay": _NON_NEGATIVE, "teacher.train.t_max": _NON_NEGATIVE,
    "teacher.train.maniqa_epochs": _NON_NEGATIVE, "teacher.train.maniqa_lr": _POSITIVE,
}


def _check(cfg: RunConfig) -> None:
    """Ranges, choices and the rules that tie two keys together; one ConfigError per problem."""
    for key, (rule, ok) in _RANGES.items():
        value = cfg
        for name in key.split("."):
            value = getattr(value, name)
        if value is not None and not ok(value):
            raise ConfigError(f"{key}={value!r}: expected {rule}")
    from student.model import StudentConfig, list_students

    from .data import DATASET_KINDS

    kinds = ("demo", *DATASET_KINDS)
    if cfg.data.kind not in kinds:
        raise ConfigError(f"data.kind={cfg.data.kind!r}: expected one of {', '.join(kinds)}")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction = "
                          f"{cfg.data.val_fraction + cfg.data.test_fraction:g}: must leave images to train on (< 1)")
    if cfg.train.min_lr > cfg.train.lr:
        raise ConfigError(f"train.min_lr={cfg.train.min_lr:g} is above train.lr={cfg.train.lr:g}")
    if cfg.student.variant not in list_students():
        raise ConfigError(f"student.variant={cfg.student.variant!r}: expected one of {', '.join(list_students())}")
    hints = get_type_hints(StudentConfig)
    unknown = sorted(set(cfg.student.overrides) - set(hints))
    if unknown:
        raise ConfigError(f"student.overrides: unknown student config field(s) {unknown}; "
                          f"valid: {sorted(hints)}")
    # Checked as the student will read them, kept JSON-shaped (lists) as written.
    cfg.student.overrides = json.loads(json.dumps({
        name: coerce_value(value, hints[name], f"student.overrides.{name}")
        for name, value in cfg.student.overrides.items()}))


def _parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars/lists: 3, 0.1, true, null, [224, 224], mnv3s."""
    return yaml.safe_load(text)


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings to a config dict (validated when the dataclass is built)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.epochs=5")
        key, text = item.split("=", 1)
        node = config
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {key}: {part!r} is not a config section")
            node = node[part]
        node[parts[-1]] = _parse_value(text)
    return config


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- config file (YAML or JSON) <- ``overrides``; returns a validated RunConfig."""
    config = RunConfig().to_dict()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            text = path.read_text()
            # A run's saved config.json is JSON: read it as JSON, so 1e-05 stays a number.
            loaded = (json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)) or {}
        except (yaml.YAMLError, ValueError) as exc:
            raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                              f"({' '.join(str(exc).split())})") from None
        _merge(config, loaded, str(path))
    apply_overrides(config, overrides or [])
    try:
        return RunConfig.from_dict(config)
    except TypeError as exc:
        raise ConfigError(f"invalid config: {exc}") from None


def load_resume_config(run_dir: str | os.PathLike, overrides: list[str] | None = None) -> RunConfig:
    """The saved config of the run in ``run_dir`` (``agiqa-distill run --resume``), with
    ``overrides`` applied and ``out_dir`` pinned to ``run_dir`` (the folder may have moved)."""
    from student.layout import RunLayout  # the run folder's names have one home

    saved = RunLayout(run_dir).config
    if not saved.is_file():
        raise ConfigError(f"{saved}: missing; --resume needs a run folder written by agiqa-distill run")
    return load_config(saved, [*(overrides or []), f"out_dir={run_dir}"])


def _merge(base: dict[str, Any], new: dict[str, Any], where: str) -> None:
    if not isinstance(new, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "overrides":
            _merge(base[key], value, where)
        else:
            base[key] = value
