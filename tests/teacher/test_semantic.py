"""Semantic teacher: tiny random LLaVA round trip, shapes, padding invariance, pooling, errors.

Everything is built locally under tmp_path; nothing touches a network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from teacher.semantic import (
    COHERENCE_PROMPT,
    DEFAULT_PROMPTS,
    SEMANTIC_CONTENT_PROMPT,
    SemanticConfig,
    SemanticEncoder,
    expand_to_square,
    pool_hidden,
    resolve_dtype,
)
from teacher.tiny_mllm import TinyMLLMConfig, build_tiny_mllm, save_tiny_mllm

ATOL = 1e-5
SHORT_PROMPT = "Describe this picture."


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    """n random RGB images of different, mostly non-square sizes."""
    g = torch.Generator().manual_seed(seed)
    sizes = [(40, 24), (24, 40), (32, 32), (50, 30), (17, 33), (64, 48), (30, 30), (45, 20)]
    out = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        out.append(Image.fromarray(pixels, "RGB"))
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_mllm(tmp_path_factory.mktemp("tiny_llava"), seed=0)


@pytest.fixture(scope="module")
def encoder(tiny_dir: Path) -> SemanticEncoder:
    cfg = SemanticConfig(model_path=str(tiny_dir), prompts=(COHERENCE_PROMPT, SHORT_PROMPT))
    return SemanticEncoder.from_pretrained(cfg, device="cpu")


def _with(enc: SemanticEncoder, **changes) -> SemanticEncoder:
    """Same loaded backend, different config (prompts, pooling, batch size)."""
    fields = {**enc.config.__dict__, **changes}
    return SemanticEncoder(SemanticConfig(**fields), enc.backend)


def test_round_trip_is_deterministic(tmp_path: Path, tiny_dir: Path, encoder: SemanticEncoder) -> None:
    again = save_tiny_mllm(tmp_path / "again", seed=0)
    other = save_tiny_mllm(tmp_path / "other", seed=1)
    a, b, c = (load_file(str(d / "model.safetensors")) for d in (tiny_dir, again, other))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    built, _ = build_tiny_mllm(seed=0)
    loaded = encoder.backend.model.state_dict()
    for name, tensor in built.state_dict().items():
        assert torch.equal(tensor, loaded[name]), name


def test_shape_dtype_and_hidden_size(encoder: SemanticEncoder) -> None:
    vecs = encoder.encode(_images(3))
    assert vecs.shape == (3, 2, TinyMLLMConfig().text_hidden)
    assert vecs.dtype == torch.float32 and vecs.device.type == "cpu"
    assert encoder.hidden_size == TinyMLLMConfig().text_hidden
    assert torch.isfinite(vecs).all()
    assert not torch.allclose(vecs[:, 0], vecs[:, 1])  # prompts give different vectors


def test_default_config_matches_ma_agiqa() -> None:
    cfg = SemanticConfig(model_path="x")
    # expert order of the official fusion: [semantic content (tensor_1), coherence (tensor_2)]
    assert cfg.prompts == DEFAULT_PROMPTS == (SEMANTIC_CONTENT_PROMPT, COHERENCE_PROMPT)
    assert cfg.pooling == "mean" and cfg.trust_remote_code is False
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_prompt_template_puts_image_after_question(encoder: SemanticEncoder) -> None:
    assert encoder.backend.prompt_text(COHERENCE_PROMPT) == f"USER: {COHERENCE_PROMPT}\n<image> ASSISTANT:"


def _assert_padding_invariant(enc: SemanticEncoder, n_images: int = 4) -> torch.Tensor:
    """Batched (images x prompts of different lengths, so padded) == each image and prompt alone."""
    images = _images(n_images)
    batched = enc.encode(images)
    assert batched.shape == (n_images, len(enc.config.prompts), enc.hidden_size)
    for p, prompt in enumerate(enc.config.prompts):
        alone = _with(enc, prompts=(prompt,))
        singles = torch.cat([alone.encode([im]) for im in images])[:, 0]  # no padding at all
        torch.testing.assert_close(batched[:, p], singles, atol=ATOL, rtol=1e-4)
    return batched


def test_single_equals_batched(encoder: SemanticEncoder) -> None:
    batched = _assert_padding_invariant(encoder, n_images=5)
    chunked = _with(encoder, batch_size=2).encode(_images(5))
    torch.testing.assert_close(chunked, batched, atol=ATOL, rtol=1e-4)


def test_tiny_qwen2_vl_single_equals_batched(tmp_path: Path) -> None:
    folder = save_tiny_mllm(tmp_path / "tiny_qwen", family="qwen2_vl")
    cfg = SemanticConfig(model_path=str(folder), prompts=(SHORT_PROMPT, COHERENCE_PROMPT))
    enc = SemanticEncoder.from_pretrained(cfg, device="cpu")
    assert enc.backend.prompt_text(SHORT_PROMPT).startswith(f"<|im_start|>user\n{SHORT_PROMPT}<|vision_start|>")
    _assert_padding_invariant(enc, n_images=3)


def test_last_pooling_is_last_real_token(encoder: SemanticEncoder) -> None:
    images = _images(3)
    last_enc = _with(encoder, pooling="last")
    mean, last = encoder.encode(images), last_enc.encode(images)
    assert not torch.allclose(mean, last)
    backend = encoder.backend
    square = expand_to_square(images[0], backend.image_mean)
    inputs = backend.processor(text=[backend.prompt_text(SHORT_PROMPT)], images=[square], return_tensors="pt")
    with torch.inference_mode():
        out = backend.model(**inputs, output_hidden_states=True)
    hidden = out.hidden_states[-1][0]
    torch.testing.assert_close(last[0, 1], hidden[-1], atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(mean[0, 1], hidden.mean(0), atol=ATOL, rtol=1e-4)


def test_prompts_are_configurable(encoder: SemanticEncoder) -> None:
    prompts = (SHORT_PROMPT, "How would you rate this photo?", COHERENCE_PROMPT)
    vecs = _with(encoder, prompts=prompts).encode(_images(2))
    assert vecs.shape == (2, 3, encoder.hidden_size)
    base = encoder.encode(_images(2))  # prompts (COHERENCE, SHORT)
    torch.testing.assert_close(vecs[:, 2], base[:, 0], atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(vecs[:, 0], base[:, 1], atol=ATOL, rtol=1e-4)


def test_expand_to_square_uses_truncated_mean_colour() -> None:
    clip_mean = (0.48145466, 0.4578275, 0.40821073)
    square = expand_to_square(Image.new("RGB", (10, 4), (255, 0, 0)), clip_mean)
    assert square.size == (10, 10)
    assert square.getpixel((0, 0)) == (122, 116, 104)  # int(x * 255), as the reference
    assert square.getpixel((5, 3)) == (255, 0, 0) and square.getpixel((5, 7)) == (122, 116, 104)
    tall = expand_to_square(Image.new("RGB", (3, 9), (0, 255, 0)), clip_mean)
    assert tall.size == (9, 9) and tall.getpixel((3, 4)) == (0, 255, 0) and tall.getpixel((2, 4)) != (0, 255, 0)


def test_pool_hidden_ignores_padding() -> None:
    hidden = torch.arange(12, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    torch.testing.assert_close(pool_hidden(hidden, mask, "mean"), torch.tensor([[1.0, 2.0], [9.0, 10.0]]))
    torch.testing.assert_close(pool_hidden(hidden, mask, "last"), torch.tensor([[2.0, 3.0], [10.0, 11.0]]))


def test_remote_code_folder_refused_without_flag(tmp_path: Path) -> None:
    # mPLUG-Owl2 is native now (tests/test_mplug_owl2.py); any other unknown model_type still needs the flag.
    folder = tmp_path / "custom-vlm"
    folder.mkdir()
    config = {"model_type": "custom_vlm", "auto_map": {"AutoModelForCausalLM": "modeling_custom.CustomVLM"}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="--trust-remote-code") as info:
        SemanticEncoder.from_pretrained(SemanticConfig(model_path=str(folder)), device="cpu")
    assert str(folder) in str(info.value) and "custom_vlm" in str(info.value)



def test_mllm_backend_registry() -> None:
    """Our ports are looked up by model_type, transformers' own types go to transformers, the
    rest is refused with the list of ours (or loads the folder's own code when trusted)."""
    from teacher.semantic import MLLM_BACKENDS, mllm_backend

    assert mllm_backend("mplug_owl2", "m") is MLLM_BACKENDS["mplug_owl2"]
    native = mllm_backend("llava", "m")
    assert native not in MLLM_BACKENDS.values()
    assert mllm_backend("custom_vlm", "m", trust_remote_code=True) not in (native, *MLLM_BACKENDS.values())
    with pytest.raises(ValueError, match=r"m: model_type 'custom_vlm' is neither one of ours \(mplug_owl2\)"):
        mllm_backend("custom_vlm", "m")

def test_missing_folder_and_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        SemanticEncoder.from_pretrained(SemanticConfig(model_path=str(tmp_path / "nope")), device="cpu")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SemanticEncoder.from_pretrained(SemanticConfig(model_path=str(tmp_path)), device="cpu")


@pytest.mark.parametrize("changes, message", [
    ({"pooling": "max"}, "pooling must be one of"),
    ({"prompts": ()}, "prompts must be a non-empty list of non-empty strings"),
    ({"prompts": ("",)}, "prompts must be a non-empty list of non-empty strings"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"dtype": "int8"}, "dtype must be 'auto' or one of .*, got 'int8'"),
])
def test_config_validation(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SemanticConfig(model_path="x", **changes)


def test_encode_rejects_bad_input(encoder: SemanticEncoder) -> None:
    with pytest.raises(ValueError, match="needs at least one image"):
        encoder.encode([])
    with pytest.raises(TypeError, match="a list of PIL images, not a single image"):
        encoder.encode(_images(1)[0])
