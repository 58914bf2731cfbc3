"""The student: a timm mobile backbone with a lightweight mixture of experts that mirrors MA-AGIQA.

The teacher fuses three streams with a gated mixture of experts: two semantic vectors from a
multimodal LLM (one per prompt) and MANIQA's quality feature. The student sees only pixels,
so it *predicts* each stream (in the distiller's compressed space) from its backbone features,
then fuses the predicted streams the same way: one small expert per stream, a softmax gate
over the experts, a linear score head. Supervising the predicted streams and the gate keeps
the teacher's semantic judgement, not only its score.

    image (B, 3, H, W) -> backbone -> pooled (B, F)
        -> stream heads: semantic (B, S, Ds), quality (B, Dq)
        -> experts E x (B, W) -> gate (B, E) -> mixture (B, W) -> score (B,)

The head is written once, here, with ops that ``torch.export`` and the XNNPACK delegate take
whole; the exported program (``export.wrapper.EdgeStudent``) runs this same code.
The input normalisation is the backbone's own (timm ``pretrained_cfg``) unless the config sets it.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import timm
import torch
from safetensors import safe_open
from safetensors.torch import save
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_model_data_config
from torch import nn

from _agiqa.atomic import atomic_write_bytes, atomic_write_json
from _agiqa.checkpoints import shapes, state_mismatch
from edge_runtime.preprocess import INTERPOLATIONS, PreprocessSpec

__all__ = ["StudentConfig", "StudentOutput", "StudentIQA", "create_student", "list_students",
           "CONFIG_NAME", "WEIGHTS_NAME", "StudentLoadError", "backbone_normalization"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
TRAINED_CONFIG_KEY = "agiqa-edge/student-config"  # model.safetensors metadata: the config at save time


class StudentLoadError(ValueError):
    """A student folder is missing, incomplete or does not match its config."""


@dataclass
class StudentConfig:
    """Everything needed to rebuild a student; saved as ``config.json`` beside the weights."""

    backbone: str = "mobilenetv3_small_100"  # timm model name (features + global pool used)
    backbone_weights: str | None = None  # local timm weights file (pretrained_cfg overlay); None = random init
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs
    input_size: tuple[int, int] = (224, 224)  # (H, W) the whole image is resized to
    # The resize to input_size and whether large JPEGs are DCT-downscaled while decoding, both
    # part of the input contract (PreprocessSpec). Default: the teacher's own view (OpenCV's
    # INTER_CUBIC, not antialiased, full decode), so the student sees the pixels its labels came
    # from; an antialiased Pillow resize hides most of the noise the teacher sees in a large
    # photo (the demo on real photos of 512 px: SRCC to the teacher 0.51 -> 0.77; README, step 5 of
    # "How the demo learns quality").
    # jpeg_draft=True decodes large JPEGs several times faster, at some fidelity.
    interpolation: str = "cv2_bicubic"
    jpeg_draft: bool = False
    num_semantic: int = 2  # teacher semantic vectors per image (one per prompt)
    semantic_dim: int = 128  # compressed dim of each predicted semantic vector
    quality_dim: int = 64  # compressed dim of the predicted quality feature
    expert_width: int = 128  # width of each expert's output (teacher: 784)
    drop_rate: float = 0.1  # dropout inside the experts, as the teacher's semantic experts
    score_range: tuple[float, float] | None = None  # range of the teacher score, for display
    lower_better: bool = False  # score direction: higher = better quality
    # Input normalisation on the [0, 1] scale. None = the backbone's own, from timm's
    # resolve_model_data_config (its pretrained_cfg), filled in when the student is built, so
    # a saved config.json always holds the values the weights were trained with.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # Local contrast normalisation in front of the backbone (LuminanceMSCNStem), whose first conv then
    # takes 4 channels (timm adapts ImageNet weights to them). False: the plain backbone.
    contrast_stem: bool = False

    def __post_init__(self) -> None:
        self.input_size = tuple(self.input_size)
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 3:
                    raise ValueError(f"student {name} must have 3 values (R, G, B), got {list(value)}")
                setattr(self, name, tuple(float(v) for v in value))
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown student interpolation {self.interpolation!r}; "
                             f"choose from {list(INTERPOLATIONS)}")
        if self.score_range is not None:
            self.score_range = tuple(self.score_range)
        if self.num_semantic < 0 or min(self.semantic_dim, self.quality_dim, self.expert_width) < 1:
            raise ValueError(f"invalid student dims in {self}")

    @property
    def num_experts(self) -> int:
        return self.num_semantic + 1

    @property
    def preprocess(self) -> PreprocessSpec:
        """The input contract shared with training, export and the device runtime."""
        if self.mean is None or self.std is None:
            raise ValueError(f"the student's mean/std come from its backbone {self.backbone!r}: read "
                             "preprocess from the built model (StudentIQA(config).config.preprocess)")
        return PreprocessSpec(input_size=self.input_size, mean=self.mean, std=self.std,
                              interpolation=self.interpolation, jpeg_draft=self.jpeg_draft)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown student config fields {sorted(unknown)}")
        # A saved config without mean/std predates their resolution from the backbone: the
        # student was trained with ImageNet values then.
        # One without interpolation/jpeg_draft predates them: it was trained on Pillow's
        # antialiased bilinear resize of a draft-decoded image.
        legacy = {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
                  "interpolation": "bilinear", "jpeg_draft": True}
        return cls(**{**legacy, **data})


class StudentOutput(NamedTuple):
    """Named outputs (a NamedTuple, so ``torch.export`` flattens it in this order). The first four
    predict the teacher's labels (``teacher.model.TeacherOutput``) under the same names."""

    score: torch.Tensor  # (B,) predicted teacher score
    semantic_vectors: torch.Tensor  # (B, S, Ds) predicted compressed semantic vectors
    quality_features: torch.Tensor  # (B, Dq) predicted compressed quality feature
    gate_weights: torch.Tensor  # (B, E) softmax gate over experts [semantic..., quality]
    gate_logits: torch.Tensor  # (B, E) pre-softmax gate, for the distiller's KL


class LuminanceMSCNStem(nn.Module):
    """``(B, 3, H, W)`` normalised image -> ``(B, 4, H, W)``: the MSCN coefficients of its
    luminance, then the image.

    A student trained from random weights learns image quality much faster from local contrast
    normalisation (the demo: held-out SRCC to its teacher 0.89 -> 0.92 in the same 10 epochs).
    MSCN as in BRISQUE (Mittal et al. 2012): ``(I - mu) / (sigma + 1)`` of the 0-255 luminance
    (BT.601 weights) with a 7 x 7 Gaussian window (sigma 7/6), the normalisation the demo teacher's
    ``teacher.maniqa.MSCNPatchEmbed`` applies to each RGB channel. Zero padding renormalised by the
    window's mass at the borders (XNNPACK has no replicate padding), ``relu`` as the variance
    clamp, so the delegate takes every op. Export keeps it in fp32 (only ``backbone`` is
    quantized): int8 moments would cancel.

    Shaped by XNNPACK's per-operator profile (``bench/edge_profile.py``), where an op on one or two
    full-resolution channels costs what its pixels cost, not its arithmetic (a 2-channel depthwise
    window fills 2 of a vector's 8-16 lanes; docs/edge.md has the profile):

    - the luminance is computed straight into a *polyphase* layout, each 4 x 4 block of pixels
      the 16 channels of one position, ``(B, 16, H/4, W/4)`` (a stride-4 convolution whose weights
      pick the pixels). There each 1-d factor of the window is a 3-tap convolution over 16
      channels (a pixel's 7 taps reach at most one block either way), run at full vector width,
      and the elementwise ops touch as many values as before; ``pixel_shuffle`` puts MSCN back;
    - the luminance is centred on that of the normalisation mean (no bias): MSCN does not change
      with a constant shift, and centred moments cancel less in float32 (the demo student's
      scores on 51 real photos: largest difference to float64 arithmetic 1.5e-3 with the former
      stem, 3.7e-4 with this one);
    - channels are placed by 1 x 1 convolutions, not ``cat`` or channel padding (a padded tensor
      in front of a dynamically quantized convolution fails XNNPACK's shape propagation).

    Sizes that are not multiples of 4 are padded with zeros (masked out of the moments) and
    cropped after. Equal to the direct 7 x 7 window up to float32 rounding.
    """

    out_channels = 4
    phase = 4  # pixels per block side of the polyphase layout (>= 4: the window's radius is 3)

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], input_size: tuple[int, int]) -> None:
        super().__init__()
        s, (height, width) = self.phase, input_size
        taps = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / (2 * (7 / 6) ** 2))
        self.register_buffer("taps", taps / taps.sum(), persistent=False)  # the 1-d factor of the window
        # grey - grey(mean) = sum_c luma_c * 255 * std_c * x_c; pixel (a, b) of a block -> channel a*s + b
        luma = torch.tensor([0.299, 0.587, 0.114]) * torch.tensor(std) * 255
        to_blocks = torch.zeros(s * s, 3, s, s)
        for a in range(s):
            for b in range(s):
                to_blocks[a * s + b, :, a, b] = luma
        self.register_buffer("grey_weight", to_blocks, persistent=False)
        along, same = self._polyphase_taps(self.taps, s), torch.eye(s)  # channel a*s + b: rows mix a, columns b
        self.register_buffer("window_h", torch.stack([torch.kron(d, same) for d in along], -1)[..., None],
                             persistent=False)  # (16, 16, 3, 1)
        self.register_buffer("window_w", torch.stack([torch.kron(same, d) for d in along], -1)[:, :, None],
                             persistent=False)  # (16, 16, 1, 3)
        # zero padding to a multiple of s (right, bottom); padded pixels are masked out of the moments
        self.size, self.padding = (height, width), (0, -width % s, 0, -height % s)
        valid = nn.functional.pixel_unshuffle(nn.functional.pad(torch.ones(1, 1, height, width), self.padding), s)
        self.register_buffer("valid", valid if any(self.padding) else None, persistent=False)
        self.register_buffer("inv_mass", 1 / self._window(valid), persistent=False)
        self.register_buffer("place_image", torch.eye(4, 3).roll(1, 0).view(4, 3, 1, 1), persistent=False)
        self.register_buffer("place_mscn", torch.eye(4)[:, :1].view(4, 1, 1, 1).clone(), persistent=False)
        # MSCN's C = 1 as a 4-d tensor: a Python scalar becomes a 0-d constant the delegate leaves out
        self.register_buffer("stabiliser", torch.ones(1, 1, 1, 1), persistent=False)

    @staticmethod
    def _polyphase_taps(taps: torch.Tensor, s: int) -> torch.Tensor:
        """``(3, s, s)``: a 1-d filter on blocks of ``s`` pixels. Output phase q of block k reads
        input phase r of block k + d (``d`` in -1, 0, 1) at pixel offset ``d*s + r - q``."""
        radius = len(taps) // 2
        along = torch.zeros(3, s, s)  # [d + 1, q, r]
        for q in range(s):
            for r in range(s):
                for d in (-1, 0, 1):
                    if abs(t := d * s + r - q) <= radius:
                        along[d + 1, q, r] = taps[t + radius]
        return along

    def _window(self, blocks: torch.Tensor) -> torch.Tensor:
        conv = nn.functional.conv2d
        return conv(conv(blocks, self.window_h, padding=(1, 0)), self.window_w, padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = nn.functional.conv2d
        padded = nn.functional.pad(x, self.padding) if self.valid is not None else x
        grey = conv(padded, self.grey_weight, stride=self.phase)  # (B, 16, H/4, W/4)
        if self.valid is not None:
            grey = grey * self.valid
        mu = self._window(grey) * self.inv_mass
        second = self._window(grey * grey) * self.inv_mass
        sigma = torch.relu(second - mu * mu).sqrt()
        mscn = nn.functional.pixel_shuffle((grey - mu) / (sigma + self.stabiliser), self.phase)  # (B, 1, H, W)
        if self.valid is not None:
            mscn = mscn[:, :, :self.size[0], :self.size[1]]
        # No torch.cat: the int8 quantizer gives every cat shared int8 parameters, even outside
        # its scope, which would clip the moments here.
        return conv(x, self.place_image) + conv(mscn, self.place_mscn)


class StudentIQA(nn.Module):
    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        kwargs: dict[str, Any] = dict(config.backbone_kwargs)
        if config.backbone_weights:
            kwargs["pretrained_cfg_overlay"] = {"file": str(config.backbone_weights)}
        if config.contrast_stem:
            kwargs["in_chans"] = LuminanceMSCNStem.out_channels
        self.backbone = timm.create_model(config.backbone, pretrained=bool(config.backbone_weights),
                                          num_classes=0, **kwargs)
        self.config = config = backbone_normalization(config, self.backbone)
        self.stem = LuminanceMSCNStem(config.mean, config.std, config.input_size) if config.contrast_stem else None
        width = self.backbone.num_features if not hasattr(self.backbone, "head_hidden_size") \
            else self.backbone.head_hidden_size
        self.semantic_head = nn.Linear(width, config.num_semantic * config.semantic_dim)
        self.quality_head = nn.Linear(width, config.quality_dim)
        stream_dims = [config.semantic_dim] * config.num_semantic + [config.quality_dim]
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d, config.expert_width), nn.ReLU(), nn.Dropout(config.drop_rate))
            for d in stream_dims)
        self.gate = nn.Linear(config.num_experts * config.expert_width, config.num_experts)
        self.score_head = nn.Linear(config.expert_width, 1)

    def forward_features(self, x: torch.Tensor, stem_applied: bool = False) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised image -> ``(B, F)`` pooled backbone features.
        ``stem_applied``: ``x`` is already ``stem(image)``, ``(B, stem.out_channels, H, W)``."""
        if self.stem is not None and not stem_applied:
            x = self.stem(x)
        return self.backbone(x)

    def forward_head(self, pooled: torch.Tensor) -> StudentOutput:
        """``(B, F)`` pooled features -> :class:`StudentOutput`.

        Spelled with ops the XNNPACK delegate takes whole, so the exported program needs no
        copy of this head: column slices (not ``select``), one ``cat`` (the memory order of
        ``stack`` + ``flatten``), the gate mixture as explicit adds (not ``sum``), ``reshape``
        (not ``squeeze``).
        """
        cfg = self.config
        d = cfg.semantic_dim
        semantic = self.semantic_head(pooled)  # (B, S * Ds), stream i = columns [i*Ds, (i+1)*Ds)
        quality = self.quality_head(pooled)
        streams = [semantic[:, i * d:(i + 1) * d] for i in range(cfg.num_semantic)] + [quality]
        expert_out = [expert(stream) for expert, stream in zip(self.experts, streams)]  # E x (B, W)
        gate_logits = self.gate(torch.cat(expert_out, dim=1))  # (B, E)
        gate_weights = gate_logits.softmax(dim=-1)
        mixture = expert_out[0] * gate_weights[:, 0:1]  # (B, W)
        for i in range(1, len(expert_out)):
            mixture = mixture + expert_out[i] * gate_weights[:, i:i + 1]
        score = self.score_head(mixture).reshape(-1)
        semantic = semantic.reshape(-1, cfg.num_semantic, d)
        return StudentOutput(score, semantic, quality, gate_weights, gate_logits)

    def forward(self, x: torch.Tensor, stem_applied: bool = False) -> StudentOutput:
        """``(B, 3, H, W)`` float, normalised by ``config.preprocess`` -> :class:`StudentOutput`.
        ``stem_applied``: see :meth:`forward_features` (training on images held in RAM computes
        the weightless stem once per image)."""
        return self.forward_head(self.forward_features(x, stem_applied))

    # -- checkpoints ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` (config, preprocessing, ``extra`` metadata) and safetensors weights."""
        directory = Path(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        # The config the weights were trained with travels inside the weights file, so a
        # config.json edited later (mean/std, input size, direction) is refused on load.
        trained_with = json.dumps(self.config.to_dict(), sort_keys=True)
        atomic_write_bytes(directory / WEIGHTS_NAME, save(state, metadata={TRAINED_CONFIG_KEY: trained_with}))
        meta = {"format_version": FORMAT_VERSION, "config": self.config.to_dict(),
                "preprocess": self.config.preprocess.to_dict(), **(extra or {})}
        atomic_write_json(directory / CONFIG_NAME, meta)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu") -> StudentIQA:
        """Rebuild a student from a folder written by :meth:`save_pretrained` (no pickle).

        Raises :class:`StudentLoadError` (one line) when ``config.json`` was changed after
        training, does not fit the weights, or the weights file is unreadable.
        """
        directory = Path(directory)
        config, meta = _read_student_meta(directory)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise StudentLoadError(f"{weights}: missing; the folder is not a complete student checkpoint")
        try:
            with safe_open(str(weights), framework="pt", device=map_location) as f:
                trained_with = (f.metadata() or {}).get(TRAINED_CONFIG_KEY)
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise StudentLoadError(f"{weights}: unreadable safetensors ({exc}); re-export the student") from None
        _check_trained_config(directory, config, meta.get("preprocess"), trained_with)
        # Weights come from the checkpoint, never from a backbone file that may be gone.
        kwargs = {k: v for k, v in config.backbone_kwargs.items() if k not in _WEIGHT_FILE_KWARGS}
        try:
            model = cls(replace(config, backbone_weights=None, backbone_kwargs=kwargs))
        except (RuntimeError, TypeError, ValueError) as exc:
            raise StudentLoadError(f"{directory / CONFIG_NAME}: cannot build its backbone "
                                   f"({' '.join(str(exc).split())})") from None
        model.config = config
        problems = state_mismatch(shapes(model.state_dict()), shapes(state))
        if problems:
            raise StudentLoadError(f"{weights}: does not match {directory / CONFIG_NAME} ({problems.summary(3)}); "
                                   "restore the config.json saved with these weights")
        model.load_state_dict(state)
        return model.eval()


def backbone_normalization(config: StudentConfig, backbone: nn.Module) -> StudentConfig:
    """``config`` with the mean/std it leaves unset (None) taken from ``backbone``'s timm data
    config (``timm.data.resolve_model_data_config``: its ``pretrained_cfg``, overlays included)."""
    if config.mean is not None and config.std is not None:
        return config
    data = resolve_model_data_config(backbone)
    return replace(config, mean=data["mean"] if config.mean is None else config.mean,
                   std=data["std"] if config.std is None else config.std)


# timm.create_model keywords that load weights from elsewhere: a saved student ignores them.
_WEIGHT_FILE_KWARGS = ("checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay")


def _check_trained_config(directory: Path, config: StudentConfig, preprocess: dict[str, Any] | None,
                          trained_with: str | None) -> None:
    """Refuse a ``config.json`` whose config (preprocessing, direction, sizes) differs from the
    one stored inside ``model.safetensors`` when the weights were saved."""
    path = directory / CONFIG_NAME
    if trained_with is None:
        warnings.warn(f"{directory / WEIGHTS_NAME}: saved by an older version without its training "
                      f"config; {path} cannot be checked against it (save the student again)",
                      UserWarning, stacklevel=3)
        return
    try:
        trained = json.loads(trained_with)
    except ValueError:
        raise StudentLoadError(f"{directory / WEIGHTS_NAME}: damaged metadata; re-export the student") from None
    current = config.to_dict()
    # A field added since the weights were saved takes its default, as StudentConfig.from_dict does.
    trained = {**StudentConfig.from_dict({k: v for k, v in trained.items() if k in StudentConfig.__dataclass_fields__}
                                         ).to_dict(), **trained}
    changed = [k for k in sorted(set(trained) | set(current))
               if k != "backbone_weights" and trained.get(k) != current.get(k)]
    if changed:
        first = changed[0]
        raise StudentLoadError(
            f"{path}: {', '.join(changed)} changed after training ({first} is {current.get(first)!r}, "
            f"the weights were trained with {trained.get(first)!r}); restore the config.json saved with "
            "these weights")
    if preprocess is not None and preprocess != json.loads(json.dumps(config.preprocess.to_dict())):
        raise StudentLoadError(f"{path}: its \"preprocess\" block differs from the preprocessing the "
                               "weights were trained with; restore the config.json saved with these weights")


def read_student_config(directory: str | os.PathLike) -> StudentConfig:
    """Read ``config.json`` of a student folder, with a clear error when it is not one."""
    return _read_student_meta(directory)[0]


def _read_student_meta(directory: str | os.PathLike) -> tuple[StudentConfig, dict[str, Any]]:
    """A student folder's ``config.json`` -> (its StudentConfig, the whole JSON object)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise StudentLoadError(f"{path}: missing; pass a student folder written by save_pretrained "
                               "(a run's student/best) ")
    try:
        meta = json.loads(path.read_text())
        return StudentConfig.from_dict(meta["config"]), meta
    except (ValueError, KeyError, TypeError) as exc:
        raise StudentLoadError(f"{path}: not a student config ({exc})") from None


# -- named variants --------------------------------------------------------------------------
_VARIANTS: dict[str, StudentConfig] = {
    # Test-sized: tiny backbone at 64 px, runs a training step in milliseconds.
    "tiny": StudentConfig(backbone="mobilenetv3_small_050", input_size=(64, 64), semantic_dim=16,
                          quality_dim=16, expert_width=16),
    "mnv3s": StudentConfig(backbone="mobilenetv3_small_100", contrast_stem=True),
    "mnv4s": StudentConfig(backbone="mobilenetv4_conv_small", contrast_stem=True),
    "lcnet": StudentConfig(backbone="lcnet_100", contrast_stem=True),
    "mnv3l075": StudentConfig(backbone="mobilenetv3_large_075", contrast_stem=True),
}
DEFAULT_STUDENT = "mnv3s"


def list_students() -> list[str]:
    return sorted(_VARIANTS)


def create_student(name: str = DEFAULT_STUDENT, **overrides: Any) -> StudentIQA:
    """Build a named student variant, with config fields overridden by keyword."""
    if name not in _VARIANTS:
        raise ValueError(f"unknown student {name!r}; valid names: {', '.join(list_students())}")
    return StudentIQA(replace(_VARIANTS[name], **overrides))


def student_config(name: str) -> StudentConfig:
    if name not in _VARIANTS:
        raise ValueError(f"unknown student {name!r}; valid names: {', '.join(list_students())}")
    return replace(_VARIANTS[name])
