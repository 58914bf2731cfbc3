"""The full teacher: MLLM semantic vectors + MA-AGIQA, turned into per-image labels.

A teacher lives in a folder (or a config pointing at files):

    teacher.json            TeacherConfig (below)
    ma_agiqa.safetensors    MA-AGIQA weights with the official key names (or ``weights`` elsewhere)
    mllm/                   a Hugging Face multimodal model folder (or ``semantic.model_path``)

The image the MANIQA branch sees is the official one: the whole image resized to 224 x 224 with
OpenCV's INTER_CUBIC (``interpolation: "cv2_bicubic"``, reimplemented in numpy: not antialiased,
unlike Pillow's bicubic), normalised with mean 0.5 / std 0.5. The official semantic vectors were
computed and stored in fp16, so the official teacher config runs the MLLM in float16
(``semantic.dtype``; bfloat16 and float32 remain options). The crops averaged for the label are
a fixed, recorded grid over that view; with the official 224 view the grid is the single full-frame
crop, so the teacher's score is an image-level score of the whole picture, the same view the
student (whole image squashed to its input size) gets.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from _agiqa.atomic import atomic_write_bytes, atomic_write_json
from edge_runtime.preprocess import INTERPOLATIONS, normalize, normalize_table, resize_rgb

from .maniqa import MANIQA_MEAN, MANIQA_STD, create_maniqa, crop_boxes, maniqa_preset
from .model import (
    MAAGIQA,
    FusionConfig,
    TeacherOutput,
    load_official_checkpoint,
    ours_to_official,
    revive_quality_branch,
)
from .semantic import SemanticConfig, SemanticEncoder, SquareInputs
from .views import lookup_levels, to_device

if TYPE_CHECKING:
    from .tiny_mllm import TinyMLLMConfig

__all__ = ["TeacherConfig", "Teacher", "save_tiny_teacher", "read_teacher_config", "teacher_fingerprint",
           "teacher_view", "TeacherInputs", "TEACHER_CONFIG_NAME", "tiny_teacher_for"]

TEACHER_CONFIG_NAME = "teacher.json"
WEIGHTS_NAME = "ma_agiqa.safetensors"


@dataclass
class TeacherConfig:
    """Everything that defines a teacher's labels; hashed into the cache fingerprint."""

    maniqa: str = "base"  # MANIQA preset ("base" = the paper's ViT-B/8; "tiny" for tests)
    weights: str | None = None  # MA-AGIQA state dict (official names); relative to the folder
    semantic: SemanticConfig = field(default_factory=SemanticConfig)  # MLLM, prompts, pooling
    fusion: FusionConfig = field(default_factory=FusionConfig)  # MoE dims; semantic_dim = MLLM width
    view_size: tuple[int, int] = (224, 224)  # official: whole image resized to 224 x 224
    interpolation: str = "cv2_bicubic"  # official: cv2.resize INTER_CUBIC; or a Pillow filter
    num_crops: int = 1  # 224 crops averaged per image (1 = the full official view)
    crop_mode: str = "grid"  # deterministic crop positions (recorded in the fingerprint)
    score_range: tuple[float, float] | None = None  # MOS scale of the training data, e.g. (0, 5)

    def __post_init__(self) -> None:
        maniqa_preset(self.maniqa)  # a preset name (teacher.json cannot hold a whole ManiqaConfig)
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; choose from {', '.join(INTERPOLATIONS)} "
                             "(the official teacher uses 'cv2_bicubic')")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherConfig:
        data = dict(data)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown teacher config fields {sorted(unknown)}")
        data["semantic"] = SemanticConfig(**data.get("semantic", {}))
        data["fusion"] = FusionConfig(**data.get("fusion", {}))
        for key in ("view_size", "score_range"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def _file_digest(path: Path, full: bool) -> str:
    """sha256 of a file; for multi-GB LLM shards only size + first/last MiB (hashing 14 GB on
    every run would cost minutes and the weights change as a whole, not in the middle)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if full or size <= 4 << 20:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f.read(1 << 20))
            f.seek(size - (1 << 20))
            h.update(f.read(1 << 20))
            h.update(str(size).encode())
    return h.hexdigest()


def _resolve(path: str, root: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


# Weights, configs and the sentencepiece tokenizer model: everything in an MLLM folder that
# can change a semantic vector.
_FINGERPRINTED_SUFFIXES = (".safetensors", ".bin", ".json", ".model")


def teacher_fingerprint(config: TeacherConfig, root: str | os.PathLike) -> dict[str, Any]:
    """Config + weight digests + prompts + crops, computed without loading any model.

    Two teachers with equal fingerprints label alike; where the files lie does not count.
    """
    root = Path(root)
    cfg = config.to_dict()
    # Where the model lies, the batch size and trust do not change labels; the dtype does (fp16
    # and bf16 vectors differ in the third digit), so it stays in.
    for key in ("model_path", "batch_size", "trust_remote_code"):
        cfg["semantic"].pop(key, None)
    cfg.pop("weights", None)
    cfg["fusion"].pop("semantic_dim", None)  # read from the MLLM; its weights are hashed below
    model_path = _resolve(config.semantic.model_path, root)
    if not model_path.is_dir():
        raise FileNotFoundError(f"{model_path}: MLLM folder not found; set teacher semantic.model_path "
                                "to a local Hugging Face model folder")
    # Keyed by role and file name inside the MLLM folder, never by folder names: the same
    # teacher copied elsewhere has the same fingerprint and reuses its labels.
    files = {f"mllm/{p.name}": p for p in sorted(model_path.iterdir())
             if p.suffix in _FINGERPRINTED_SUFFIXES and p.is_file()}
    if config.weights:
        weights = _resolve(config.weights, root)
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: MA-AGIQA checkpoint not found; fix `weights` in "
                                    f"{root / TEACHER_CONFIG_NAME}")
        files["ma_agiqa_weights"] = weights
    else:
        cfg["weights_note"] = "no MA-AGIQA weights: MANIQA and fusion are a seeded random init (seed 0)"
    digests = {key: _file_digest(p, full=p.stat().st_size < (2 << 30)) for key, p in files.items()}
    crops = crop_boxes(*config.view_size, num_crops=config.num_crops, mode=config.crop_mode)
    return {"config": cfg, "weights": digests, "crops": [list(c) for c in crops]}


def teacher_view(image: np.ndarray, config: TeacherConfig) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB -> ``(3, h, w) float32`` MANIQA view, in the official order of
    operations: resize the whole image to ``view_size`` (official: cv2 INTER_CUBIC to 224 x 224),
    scale to [0, 1], normalise with mean 0.5 / std 0.5. (The official code resizes the BGR array
    and then swaps channels; the resize acts per channel, so the order does not matter.)"""
    return normalize(resize_rgb(image, config.view_size, config.interpolation), MANIQA_MEAN, MANIQA_STD)


def read_teacher_config(directory: str | os.PathLike) -> TeacherConfig:
    """The ``teacher.json`` of a teacher folder, with a one-line error naming the file and fix."""
    path = Path(directory) / TEACHER_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a teacher folder needs {TEACHER_CONFIG_NAME} "
                                "(template: configs/teacher_mplug_owl2.json)")
    try:
        return TeacherConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not a valid teacher config ({exc}); "
                         "compare with configs/teacher_mplug_owl2.json") from None


class Teacher:
    """Labels images: implements the cache's ``Labeler`` protocol (``label``, ``fingerprint``)."""

    def __init__(self, config: TeacherConfig, model: MAAGIQA, encoder: SemanticEncoder,
                 device: torch.device, fingerprint: dict[str, Any]) -> None:
        self.config, self.model, self.encoder, self.device = config, model, encoder, device
        self._fingerprint = fingerprint
        self._crops = crop_boxes(*config.view_size, num_crops=config.num_crops, mode=config.crop_mode)

    @classmethod
    def from_config(cls, config: TeacherConfig, *, root: str | os.PathLike | None = None,
                    device: str | torch.device | None = None, allow_pickle: bool = False) -> Teacher:
        """Build from a config; relative paths resolve against ``root`` (a teacher folder).

        ``allow_pickle`` permits a pickled MA-AGIQA checkpoint (arbitrary code execution risk).
        """
        root = Path(root) if root is not None else Path.cwd()
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        fingerprint = teacher_fingerprint(config, root)
        model_path = _resolve(config.semantic.model_path, root)
        config = replace(config, semantic=replace(config.semantic, model_path=str(model_path)))
        encoder = SemanticEncoder.from_pretrained(config.semantic, device=device)
        if encoder.hidden_size != config.fusion.semantic_dim:
            config = replace(config, fusion=replace(config.fusion, semantic_dim=encoder.hidden_size))
        torch.manual_seed(0)  # without `weights` the fusion is a seeded random init (recorded)
        model = MAAGIQA(config.maniqa, config.fusion)
        if config.weights:
            load_official_checkpoint(model, _resolve(config.weights, root), allow_pickle=allow_pickle)
        return cls(config, model.to(device).eval(), encoder, device, fingerprint)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device | None = None,
                        trust_remote_code: bool = False, allow_pickle: bool = False) -> Teacher:
        """Load a teacher folder (``teacher.json`` + weights + ``mllm/``).

        Remote code runs only with ``trust_remote_code`` from the caller (``--trust-remote-code``,
        or ``teacher.trust_remote_code`` in the user's run config): a downloaded folder's
        ``teacher.json`` cannot grant itself trust, so its ``semantic.trust_remote_code`` is ignored.
        """
        directory = Path(directory)
        config = read_teacher_config(directory)
        config = replace(config, semantic=replace(config.semantic, trust_remote_code=trust_remote_code))
        return cls.from_config(config, root=directory, device=device, allow_pickle=allow_pickle)

    # -- the Labeler protocol ----------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        return self._fingerprint

    def view(self, image: np.ndarray) -> np.ndarray:
        return teacher_view(image, self.config)

    @property
    def prepare(self) -> TeacherInputs:
        """The per-image CPU work of a label, apart from the models and picklable, so labelling
        workers run it: ``prepare(image)`` -> inputs for :meth:`label_prepared`."""
        # Off the CPU, views travel as uint8 levels and are normalised on the device: a quarter of
        # the bytes from the workers, and no float work on the host (the same values).
        levels = self.device.type != "cpu"
        return TeacherInputs(self.config, self.encoder.inputs(levels=levels))

    @torch.inference_mode()
    def label(self, images: list[np.ndarray]) -> TeacherOutput:
        """Label a batch of ``(H, W, 3) uint8`` images: score (B,), semantic_vectors (B, S, D),
        quality_features (B, 784), gate_weights (B, E), on the CPU; crop results are averaged."""
        prepare = self.prepare
        return self.label_prepared([prepare(im) for im in images])

    @torch.inference_mode()
    def label_prepared(self, inputs: list[tuple[np.ndarray, np.ndarray]]) -> TeacherOutput:
        """:meth:`label` of images already through :attr:`prepare` (the same labels, bit for bit)."""
        semantic = self.encoder.encode_prepared([s for _, s in inputs]).to(self.device).float()
        views = to_device(np.stack([v for v, _ in inputs]), self.device)
        if views.dtype == torch.uint8:  # levels (SquareInputs(levels=True))
            views = lookup_levels(views, torch.from_numpy(normalize_table(MANIQA_MEAN, MANIQA_STD)))
        size = self.model.maniqa.config.img_size
        crops = [self.model(views[:, :, top:top + size, left:left + size], semantic) for top, left in self._crops]
        mean = TeacherOutput(*(sum(v.float() for v in field) / len(crops) for field in zip(*crops)))
        return TeacherOutput(*(v.cpu() for v in mean._replace(semantic_vectors=semantic)))


@dataclass(frozen=True)
class TeacherInputs:
    """One image's model inputs, made on the CPU (picklable, no model inside): ``(H, W, 3) uint8``
    -> (MANIQA view ``(3, h, w) float32``, the MLLM's view from :class:`SquareInputs`). When the
    MLLM's view travels as uint8 levels (``semantic.levels``), so does the MANIQA view: its resized
    ``(h, w, 3) uint8`` image, normalised on the device with ``normalize_table``."""

    config: TeacherConfig
    semantic: SquareInputs

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        semantic = self.semantic(Image.fromarray(image))
        if self.semantic.levels:
            return resize_rgb(image, self.config.view_size, self.config.interpolation), semantic
        return teacher_view(image, self.config), semantic


def tiny_teacher_for(cache_dir: str | os.PathLike) -> Path:
    """The tiny random teacher that labels ``cache_dir`` (``agiqa-distill label --tiny``):
    ``<cache>.tiny_teacher`` beside it (a cache folder holds only its labels), written on first
    use and reused after, so a resumed labelling keeps the teacher's fingerprint."""
    cache_dir = Path(cache_dir)
    directory = cache_dir.parent / f"{cache_dir.name}.tiny_teacher"
    if not (directory / TEACHER_CONFIG_NAME).is_file():
        save_tiny_teacher(directory)
    return directory


def save_tiny_teacher(directory: str | os.PathLike, seed: int = 0, *, maniqa: str = "tiny",
                      mllm: TinyMLLMConfig | None = None) -> Path:
    """Write a random-weight teacher folder (small LLaVA-style MLLM + MA-AGIQA), loadable by
    :meth:`Teacher.from_pretrained` through the same code path as real weights. For tests, the
    pipeline demo and benchmarks (``maniqa="base"`` and a bigger ``mllm`` give a mid-size
    teacher): its scores mean nothing about quality."""
    from .tiny_mllm import save_tiny_mllm  # test/demo helper, not needed for real teachers

    directory = Path(directory)
    save_tiny_mllm(directory / "mllm", seed=seed, cfg=mllm)
    encoder_cfg = SemanticConfig(model_path=str(directory / "mllm"))
    hidden = SemanticEncoder.from_pretrained(encoder_cfg, device="cpu").hidden_size
    quality_dim = create_maniqa(maniqa).config.num_patches  # 784 for 8 x 8 patches of 224
    fusion = FusionConfig(semantic_dim=hidden, quality_dim=quality_dim)
    torch.manual_seed(seed)
    model = MAAGIQA(maniqa, fusion)
    revive_quality_branch(model)
    from safetensors.torch import save

    state = {k: v.contiguous() for k, v in ours_to_official(model.state_dict()).items()}
    atomic_write_bytes(directory / WEIGHTS_NAME, save(state))
    config = TeacherConfig(maniqa=maniqa, weights=WEIGHTS_NAME, fusion=fusion,
                           semantic=replace(encoder_cfg, model_path="mllm"), score_range=None)
    atomic_write_json(directory / TEACHER_CONFIG_NAME, config.to_dict())
    return directory
