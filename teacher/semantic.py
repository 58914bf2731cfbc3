"""Semantic vectors from a local multimodal LLM, as MA-AGIQA (Wang et al. 2024) computes them.

MA-AGIQA (wangpuyi/MA-AGIQA, `getFeature.py`) asks mPLUG-Owl2 (llama2-7b) one question
per "semantic expert", pads the image to a square with the image processor's mean
colour, runs one forward pass (no generation) and keeps the mean over the sequence of
the last hidden layer: one 4096-d vector per (image, question).

This module does the same for an mPLUG-Owl2 checkpoint folder (our native port,
`teacher/mplug_owl2.py`), for any local Hugging Face image-text-to-text folder (LLaVA,
Qwen2-VL, ...; loaded natively with `AutoProcessor` + `AutoModelForImageTextToText`) and,
behind `trust_remote_code=True`, for other models that ship their own code. Nothing is
downloaded: every load uses `local_files_only=True`.

    enc = SemanticEncoder.from_pretrained(SemanticConfig(model_path="ckpt/llava"))
    vecs = enc.encode(images)  # (B, P, D) float32 on CPU, P = len(prompts)

Batching: all B images x P prompts of a batch go through ONE forward. Sequences are
right-padded (real tokens keep positions 0..n-1 and the causal mask hides the pads
that follow them), and pooling uses the attention mask, so a vector does not depend
on what else is in the batch.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from .views import lookup_levels, to_device

__all__ = [
    "COHERENCE_PROMPT",
    "SEMANTIC_CONTENT_PROMPT",
    "DEFAULT_PROMPTS",
    "MLLM_BACKENDS",
    "SemanticConfig",
    "SemanticEncoder",
    "SquareInputs",
    "clip_level_table",
    "clip_levels",
    "clip_pixel_values",
    "expand_to_square",
    "mllm_backend",
    "pool_hidden",
    "resolve_dtype",
]

# The two questions of MA-AGIQA's getFeature.py (question_type 1 and 2), verbatim.
# Their vectors are saved as <name>_coherence.pt and <name>_semantic_content.pt.
COHERENCE_PROMPT = "Evaluate if the image quality is compromised due to violations of coherence."
SEMANTIC_CONTENT_PROMPT = (
    "Evaluate the input image to determine if its quality is compromised due to a lack of "
    "meaningful semantic content."
)
# Order = the fusion's expert order: the official loader feeds `<name>_semantic_content.pt` as
# tensor_1 (expert fc4096_784_a2) and `<name>_coherence.pt` as tensor_2 (fc4096_784_b2).
DEFAULT_PROMPTS: tuple[str, ...] = (SEMANTIC_CONTENT_PROMPT, COHERENCE_PROMPT)

POOLINGS = ("mean", "last")
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


class RemoteCodeWarning(UserWarning):
    """A model folder's own Python code is about to run (``trust_remote_code``)."""


@dataclass(frozen=True)
class SemanticConfig:
    """What to load and how to turn an image into P semantic vectors."""

    model_path: str  # local Hugging Face folder (config.json, weights, tokenizer, processor)
    prompts: tuple[str, ...] = DEFAULT_PROMPTS  # one vector per prompt, in this order
    pooling: str = "mean"  # "mean": over all non-padding tokens (MA-AGIQA); "last": last real token
    dtype: str = "auto"  # "auto" (bf16/fp16 on CUDA, fp32 on CPU) or float32/float16/bfloat16
    trust_remote_code: bool = False  # allow folders whose model code ships with the weights
    batch_size: int = 8  # images per forward; each forward holds batch_size * len(prompts) sequences

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(self.prompts))
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise ValueError("SemanticConfig.prompts must be a non-empty list of non-empty strings")
        if self.pooling not in POOLINGS:
            raise ValueError(f"SemanticConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"SemanticConfig.dtype must be 'auto' or one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.batch_size < 1:
            raise ValueError(f"SemanticConfig.batch_size must be >= 1, got {self.batch_size}")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 on CUDA if supported else fp16 on CUDA, fp32 on CPU; else the named dtype."""
    if name != "auto":
        if name not in _DTYPES:
            raise ValueError(f"unknown dtype {name!r}; use 'auto' or one of {sorted(_DTYPES)}")
        return _DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def expand_to_square(image: Image.Image, mean: Sequence[float]) -> Image.Image:
    """Pad `image` (RGB) to a centred square filled with `mean` (0..1 floats, truncated to 0..255 ints).

    Same as mPLUG-Owl2/LLaVA `expand2square(img, tuple(int(x * 255) for x in image_mean))`.
    """
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    fill = tuple(int(x * 255) for x in mean)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def _square_side(processor) -> int | None:
    """The side S when ``processor`` (transformers' PIL CLIP processor) maps a square image to
    (3, S, S) by resize to S x S, a centre crop that keeps all of it, rescale and normalize; None
    for any other configuration (then the processor itself runs)."""
    if type(processor).__name__ != "CLIPImageProcessorPil" or getattr(processor, "do_pad", None):
        return None
    if not (processor.do_resize and processor.do_rescale and processor.do_normalize):
        return None
    size, crop = processor.size, processor.crop_size
    if size.shortest_edge and not size.longest_edge and not size.height:
        side = size.shortest_edge
    elif size.height and size.height == size.width and not size.shortest_edge:
        side = size.height
    else:
        return None
    if processor.do_center_crop and (crop.height, crop.width) != (side, side):
        return None
    return int(side)


def clip_level_table(processor) -> np.ndarray:
    """``(3, 256) float32``: what transformers' CLIP processor makes of each grey level of each
    channel (its float64 rescale, float32 cast, float32 ``(x - mean) / std``), the same values."""
    levels = (np.arange(256, dtype=np.uint8).astype(np.float64) * processor.rescale_factor).astype(np.float32)
    mean = np.asarray(processor.image_mean, np.float32)[:, None]
    return (levels - mean) / np.asarray(processor.image_std, np.float32)[:, None]


def clip_levels(image: Image.Image, processor) -> np.ndarray | None:
    """A square RGB image -> ``(S, S, 3) uint8``, the processor's own Pillow resize (same filter, same
    call), whose :func:`clip_level_table` lookup is its pixel values; None when the processor is
    not one whose steps are done here (see :func:`clip_pixel_values`)."""
    side = _square_side(processor)
    if side is None or image.mode != "RGB" or image.width != image.height:
        return None
    resized = image if image.size == (side, side) else image.resize((side, side), resample=processor.resample)
    return np.asarray(resized)


def clip_pixel_values(images: Sequence[Image.Image], processor) -> torch.Tensor:
    """B square RGB images -> (B, 3, S, S) float32 pixel values, equal to
    ``processor.preprocess(images, return_tensors="pt")["pixel_values"]`` value for value.

    For transformers' PIL CLIP processor (mPLUG-Owl2's, S = 448) the steps are done here directly:
    the processor's own Pillow resize (:func:`clip_levels`), then its float64 rescale and float32
    normalize at S x S, looked up per grey level (:func:`clip_level_table`). The processor itself
    first copies each full-resolution image to numpy and back to Pillow (two more full-size passes)
    and normalises in float64/float32 arrays; the values are the same. Other processors run as
    they are.
    """
    levels = [clip_levels(image, processor) for image in images]
    if any(level is None for level in levels):
        return processor.preprocess(list(images), return_tensors="pt")["pixel_values"]
    table = clip_level_table(processor)
    pixels = torch.empty((len(images), 3, *levels[0].shape[:2]), dtype=torch.float32)
    out = pixels.numpy()
    for index, rgb in enumerate(levels):
        for channel in range(3):
            np.take(table[channel], rgb[:, :, channel], out=out[index, channel])
    return pixels


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool (N, T, D) hidden states over tokens where mask (N, T) is 1 -> (N, D) float32.

    "mean": average over real tokens; "last": the last real token (any padding side).
    """
    if hidden.shape[:2] != mask.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and mask {tuple(mask.shape)} disagree on (N, T)")
    hidden = hidden.float()
    weights = mask.to(hidden.device, torch.float32)
    if bool((weights.sum(1) == 0).any()):
        raise ValueError("a sequence has no real tokens (all-zero attention mask)")
    if pooling == "mean":
        return (hidden * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=hidden.device, dtype=torch.float32)
        last = (weights * (positions + 1)).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def _read_model_config(model_path: str) -> dict:
    """The raw config.json of a local folder, with clear errors for a missing folder/file."""
    folder = Path(model_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"semantic teacher folder not found: {folder}")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json; expected a Hugging Face model folder (save_pretrained output)"
        )
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON: {err}") from err
    if not isinstance(raw, dict) or not raw.get("model_type"):
        raise ValueError(f"{config_file} has no 'model_type'; cannot tell which model to build")
    return raw


class _Backend(Protocol):
    """One model family: renders prompts, runs one forward, returns last-layer states + mask."""

    image_mean: Sequence[float]
    hidden_size: int

    def prompt_text(self, question: str) -> str: ...

    def forward(self, images: list[Image.Image], prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B squares), prompts (P) -> hidden (B*P, T, D), mask (B*P, T); image-major order."""
        ...


class _HFBackend:
    """Any transformers image-text-to-text model: processor chat template + processor tokenisation."""

    def __init__(self, model: torch.nn.Module, processor) -> None:
        self.model = model.eval()
        self.processor = processor
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "image_processor", None) is None:
            raise ValueError("the processor must have both a tokenizer and an image_processor")
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if getattr(processor, "chat_template", None) is None and tokenizer.chat_template is None:
            raise ValueError("the processor has no chat template; save one with the checkpoint")
        self.image_mean = tuple(processor.image_processor.image_mean)
        self.hidden_size = int(model.config.get_text_config().hidden_size)
        self._prompt_tokens: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}
        self._fixed_size = self._tokens_ignore_image_size()

    def _text_inputs(self, prompts: Sequence[str], size: tuple[int, int] = (37, 37)) -> dict[str, torch.Tensor]:
        """The processor's output for the prompts, each with one blank ``size`` image."""
        texts = [self.prompt_text(q) for q in prompts]
        blank = [Image.new("RGB", size) for _ in texts]
        return dict(self.processor(text=texts, images=blank, padding=True, return_tensors="pt"))

    def _tokens_ignore_image_size(self) -> bool:
        """Whether the processor maps every image to pixel values of one shape and the prompt to the
        same tokens (LLaVA-style: resize, centre crop), checked on two blank images of other sizes
        and shapes. Then its image processor can run once per image, in labelling workers, and the
        prompts' tokens once per run; processors whose tokens follow the image size (Qwen2-VL,
        LLaVA-NeXT) return other keys or shapes, and run whole at encode time."""
        small, large = self._text_inputs(["?"], (37, 37)), self._text_inputs(["?"], (91, 53))
        if set(small) != {"input_ids", "attention_mask", "pixel_values"} or set(large) != set(small):
            return False
        return (small["pixel_values"].dim() == 4 and small["pixel_values"].shape == large["pixel_values"].shape
                and torch.equal(small["input_ids"], large["input_ids"]))

    @property
    def pixel_processor(self):
        """The image processor whose pixel values ``forward_pixels`` takes, when its output does not
        depend on the image's size (see ``_tokens_ignore_image_size``); else None."""
        return self.processor.image_processor if self._fixed_size else None

    @classmethod
    def load(cls, path: str, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False
             ) -> _HFBackend:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        kwargs = {"local_files_only": True, "trust_remote_code": trust_remote_code}
        processor = AutoProcessor.from_pretrained(path, **kwargs)
        try:
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, **kwargs)
        except ValueError as err:
            raise ValueError(f"{path}: not an image-text-to-text model transformers can load ({err})") from err
        return cls(model.to(device), processor)

    def prompt_text(self, question: str) -> str:
        # The image comes after the question, as MA-AGIQA's "question\n<|image|>".
        messages = [{"role": "user", "content": [{"type": "text", "text": question}, {"type": "image"}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def forward(self, images: list[Image.Image], prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._fixed_size:  # each image through the image processor once, not once per prompt
            return self.forward_pixels(self.processor.image_processor(images=list(images), return_tensors="pt")
                                       ["pixel_values"], prompts)
        texts = [self.prompt_text(q) for q in prompts]
        seq_texts = [t for _ in images for t in texts]
        seq_images = [im for im in images for _ in texts]
        batch = self.processor(text=seq_texts, images=seq_images, padding=True, return_tensors="pt")
        device, dtype = self.model.device, self.model.dtype
        inputs = {
            k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
            for k, v in batch.items()
            if isinstance(v, torch.Tensor)
        }
        return self._run(inputs)

    def forward_pixels(self, pixels: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (B, 3, h, w) float32 from ``pixel_processor`` -> as ``forward``: sequences image-major
        (image 0 with each prompt, then image 1, ...), the prompts' tokens as the processor makes them."""
        key = tuple(prompts)
        if key not in self._prompt_tokens:
            self._prompt_tokens[key] = self._text_inputs(prompts)
        tokens, count = self._prompt_tokens[key], pixels.shape[0]
        device, dtype = self.model.device, self.model.dtype
        return self._run({"input_ids": tokens["input_ids"].repeat(count, 1).to(device),
                          "attention_mask": tokens["attention_mask"].repeat(count, 1).to(device),
                          "pixel_values": pixels.to(device, dtype).repeat_interleave(len(prompts), dim=0)})

    def _run(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(**inputs, output_hidden_states=True, use_cache=False, return_dict=True)
        return out.hidden_states[-1], inputs["attention_mask"]


class _MplugOwl2Backend:
    """mPLUG-Owl2 LLaMA-2 (the model MA-AGIQA uses), native: ``teacher/mplug_owl2.py``, no remote code.

    As MA-AGIQA's getFeature.py: conv template "mplug_owl2" (``prompt_text``), the slow
    sentencepiece tokenizer with ``tokenizer_image_token`` (image -> id -200), the folder's CLIP
    preprocessing (PIL, as 4.3x). Vision runs once per image; all prompts share one LLM forward.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, image_processor) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_mean = tuple(image_processor.image_mean)
        self.hidden_size = int(model.config.hidden_size)
        self._ids: dict[str, list[int]] = {}

    @classmethod
    def load(cls, path: str, dtype: torch.dtype, device: torch.device) -> _MplugOwl2Backend:
        from transformers import CLIPImageProcessorPil

        from .mplug_owl2 import LlamaSentencePieceTokenizer, load_mplug_owl2

        if not (Path(path) / "preprocessor_config.json").is_file():
            raise FileNotFoundError(f"{path}: no preprocessor_config.json (the CLIP image preprocessing)")
        tokenizer = LlamaSentencePieceTokenizer.from_pretrained(path)
        image_processor = CLIPImageProcessorPil.from_pretrained(path, local_files_only=True)
        model, _ = load_mplug_owl2(path, dtype, device)
        return cls(model, tokenizer, image_processor)

    def prompt_text(self, question: str) -> str:
        from .mplug_owl2 import prompt_text

        return prompt_text(question)

    def input_ids(self, question: str) -> list[int]:
        if question not in self._ids:
            self._ids[question] = self.tokenizer.image_prompt_ids(self.prompt_text(question))
        return self._ids[question]

    @property
    def pixel_processor(self):
        """The image processor whose pixel values ``forward_pixels`` takes (made by ``SquareInputs``)."""
        return self.image_processor

    def forward(self, images: list[Image.Image], prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_pixels(clip_pixel_values(images, self.image_processor), prompts)

    def forward_pixels(self, pixels: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (B, 3, S, S) float32 from ``clip_pixel_values`` -> as ``forward``."""
        weight = self.model.lm_head.weight
        return self.model(pixels.to(weight.device, weight.dtype), [self.input_ids(q) for q in prompts])


BackendLoader = Callable[[str, torch.dtype, torch.device], _Backend]

# config.json ``model_type`` -> the loader of our own port of that model. Adding an MLLM that
# transformers does not ship = its backend class (``load``, ``prompt_text``, ``forward``; see
# ``_Backend``) plus one entry here. Model types transformers knows need no entry (``_HFBackend``).
MLLM_BACKENDS: dict[str, BackendLoader] = {
    "mplug_owl2": _MplugOwl2Backend.load,  # MA-AGIQA's teacher, teacher/mplug_owl2.py
}


def _load_with_remote_code(path: str, dtype: torch.dtype, device: torch.device) -> _Backend:
    warnings.warn(f"{path}: running the Python code shipped in this folder (trust_remote_code); "
                  "do this only for folders you trust", RemoteCodeWarning, stacklevel=3)
    return _HFBackend.load(path, dtype, device, trust_remote_code=True)


def mllm_backend(model_type: str, model_path: str, trust_remote_code: bool = False) -> BackendLoader:
    """The loader for a folder whose config.json says ``model_type``: our port (``MLLM_BACKENDS``),
    else transformers' own model, else (only with ``trust_remote_code``) the folder's own code."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type in MLLM_BACKENDS:
        return MLLM_BACKENDS[model_type]
    if model_type in CONFIG_MAPPING_NAMES:
        return _HFBackend.load
    if trust_remote_code:
        return _load_with_remote_code
    raise ValueError(
        f"{model_path}: model_type {model_type!r} is neither one of ours ({', '.join(sorted(MLLM_BACKENDS))}) "
        "nor a transformers model type, so it needs the folder's own (remote) code; pass "
        "--trust-remote-code (SemanticConfig(trust_remote_code=True)) if you trust it")


@dataclass(frozen=True)
class SquareInputs:
    """The encoder's per-image CPU work, apart from the model and picklable (for labelling workers):
    an image -> RGB, padded to a square with the processor's mean colour, then either the
    ``(3, S, S) float32`` pixel values (``processor`` set: a backend with ``forward_pixels``) or,
    with ``levels``, their ``(S, S, 3) uint8`` levels (looked up on the model's device), or the
    square itself as ``(N, N, 3) uint8`` (no ``processor``: the backend's processor runs at encode
    time)."""

    image_mean: tuple[float, ...]
    processor: Any = None
    levels: bool = False

    def __call__(self, image: Image.Image) -> np.ndarray:
        square = expand_to_square(image if image.mode == "RGB" else image.convert("RGB"), self.image_mean)
        if self.processor is None:
            return np.asarray(square)
        if self.levels:
            levels = clip_levels(square, self.processor)
            if levels is not None:
                return levels
        return clip_pixel_values([square], self.processor)[0].numpy()


class SemanticEncoder:
    """Frozen multimodal LLM -> (B, P, D) semantic vectors, one per (image, prompt)."""

    def __init__(self, config: SemanticConfig, backend: _Backend) -> None:
        self.config = config
        self.backend = backend

    @classmethod
    def from_pretrained(cls, config: SemanticConfig, device: str | torch.device | None = None) -> SemanticEncoder:
        """Load `config.model_path` (local only). A ``model_type`` in ``MLLM_BACKENDS`` (our own ports,
        e.g. mPLUG-Owl2) and native transformers models load directly; others need trust_remote_code."""
        raw = _read_model_config(config.model_path)
        model_type = str(raw["model_type"])
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        load = mllm_backend(model_type, config.model_path, config.trust_remote_code)
        return cls(config, load(config.model_path, resolve_dtype(config.dtype, device), device))

    @property
    def hidden_size(self) -> int:
        """D: the width of the language model's last hidden layer (4096 for mPLUG-Owl2 llama2-7b)."""
        return self.backend.hidden_size

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return next(self.backend.model.parameters()).device

    def inputs(self, levels: bool = False) -> SquareInputs:
        """The per-image preparation ``encode_prepared`` takes (picklable; no model inside); with
        ``levels``, pixel values leave it as ``uint8`` levels, looked up on the model's device."""
        return SquareInputs(tuple(self.backend.image_mean), getattr(self.backend, "pixel_processor", None), levels)

    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """images: B PIL images -> (B, P, D) float32 on CPU; [:, p] answers config.prompts[p].

        Each image is converted to RGB and padded to a square with the processor's mean
        colour; every batch of `batch_size` images x P prompts is one forward pass.
        """
        if isinstance(images, Image.Image):
            raise TypeError("encode() takes a list of PIL images, not a single image")
        if len(images) == 0:
            raise ValueError("encode() needs at least one image")
        if not all(isinstance(im, Image.Image) for im in images):
            raise TypeError("encode() takes PIL.Image.Image objects only")
        prepare = self.inputs()
        return self.encode_prepared([prepare(im) for im in images])

    def encode_prepared(self, inputs: Sequence[np.ndarray]) -> torch.Tensor:
        """B outputs of :meth:`inputs` (pixel values or squares) -> (B, P, D) float32 on CPU, equal
        to :meth:`encode` of the images they were made from."""
        if len(inputs) == 0:
            raise ValueError("encode_prepared() needs at least one image")
        pixels = getattr(self.backend, "pixel_processor", None) is not None
        prompts = self.config.prompts
        chunks: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(inputs), self.config.batch_size):
                batch = inputs[start : start + self.config.batch_size]
                if pixels and batch[0].dtype == np.uint8:  # levels (SquareInputs(levels=True))
                    table = torch.from_numpy(clip_level_table(self.backend.pixel_processor))
                    levels = to_device(np.stack(batch), self.device)
                    hidden, mask = self.backend.forward_pixels(lookup_levels(levels, table), prompts)
                elif pixels:
                    hidden, mask = self.backend.forward_pixels(torch.from_numpy(np.stack(batch)), prompts)
                else:
                    hidden, mask = self.backend.forward([Image.fromarray(a) for a in batch], prompts)
                vectors = pool_hidden(hidden, mask, self.config.pooling)
                chunks.append(vectors.view(len(batch), len(prompts), -1).cpu())
        return torch.cat(chunks, dim=0)
