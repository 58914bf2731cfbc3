"""A tiny random-weight LLaVA, built locally, for fast tests of the semantic teacher.

`save_tiny_mllm(out_dir)` writes a complete Hugging Face folder (model weights and
config, tokenizer with chat template, image processor, processor) that loads back
through exactly the path a real checkpoint takes in `teacher.semantic`:
`AutoProcessor` + `AutoModelForImageTextToText` with `local_files_only=True`.

Nothing here downloads anything. The tokenizer is a `tokenizers` WordLevel model over
a small vocabulary that covers the MA-AGIQA prompts and the chat template, so the
default prompts never hit `<unk>`.

Shapes (defaults): images 32x32 px, CLIP patch 8 -> 16 image tokens per image;
vision hidden 32, text hidden 64 (`TinyMLLMConfig.text_hidden`), 2 layers each.
`family="qwen2_vl"` builds a tiny Qwen2-VL instead (56x56 px, 4 merged image tokens,
multimodal RoPE), a second native family with a different processor and positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

__all__ = ["FAMILIES", "TinyMLLMConfig", "build_tiny_mllm", "build_tiny_tokenizer", "save_tiny_mllm"]

FAMILIES = ("llava", "qwen2_vl")

# mPLUG-Owl2's "mplug_owl2" conversation (TWO_NO_SYS, no system prompt) as a Jinja
# chat template: "USER: {question}\n<image> ASSISTANT:". Content items of one turn are
# joined with "\n" in the order given, so [text, image] puts the image after the
# question, as MA-AGIQA's getFeature.py does.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | upper }}: "
    "{% for item in message['content'] %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{% if item['type'] == 'image' %}<image>{% else %}{{ item['text'] }}{% endif %}"
    "{% endfor %} "
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# Qwen2-VL's own template shape (system turn omitted): <|im_start|>user\n{question}
# <|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ item['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)

_SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")
_QWEN_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

# Words the tokenizer knows besides the special tokens: the chat roles, the two
# MA-AGIQA prompts, and a few extra words so tests can use other prompts.
_TEXT = (
    "USER ASSISTANT user assistant system : . , ? ! "
    "Evaluate if the image quality is compromised due to violations of coherence. "
    "Evaluate the input image to determine if its quality is compromised due to a lack "
    "of meaningful semantic content. "
    "How would you rate this picture photo Describe describe scene in detail what does it show "
    "Is there any blur noise artifact distortion good bad poor fair excellent"
)


@dataclass(frozen=True)
class TinyMLLMConfig:
    """Sizes of the tiny LLaVA. Small enough that 8 images x 2 prompts run in ms on CPU."""

    image_size: int = 32  # square input side in pixels (CLIP processor resize + crop)
    patch_size: int = 8  # CLIP patch side; (image_size / patch_size)^2 image tokens
    vision_hidden: int = 32  # CLIP vision tower width
    vision_layers: int = 2  # CLIP encoder layers
    vision_heads: int = 4  # CLIP attention heads
    text_hidden: int = 64  # Llama width = D of the semantic vectors
    text_layers: int = 2  # Llama decoder layers
    text_heads: int = 4  # Llama query heads
    text_kv_heads: int = 2  # Llama key/value heads (GQA)
    max_positions: int = 512  # Llama max sequence length
    qwen_pixels: int = 56 * 56  # Qwen2-VL min = max pixels: 56x56 -> 4x4 patches of 14 -> 4 tokens


def _vocabulary() -> dict[str, int]:
    """Token -> id; special tokens first (pad=0, unk=1, bos=2, eos=3, image=4, Qwen markers)."""
    words: list[str] = list(_SPECIAL_TOKENS) + list(_QWEN_TOKENS)
    for word in re.findall(r"\w+|[^\w\s]", _TEXT):
        if word not in words:
            words.append(word)
    return {word: index for index, word in enumerate(words)}


def build_tiny_tokenizer(chat_template: str = TINY_CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer that prepends `<s>`, knows `<image>` and the Qwen markers."""
    vocab = _vocabulary()
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # splits words and punctuation
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<image>", *_QWEN_TOKENS],
        padding_side="right",
        model_max_length=TinyMLLMConfig.max_positions,
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_processor(cfg: TinyMLLMConfig | None = None) -> LlavaProcessor:
    """CLIP image processor (OpenAI CLIP mean/std, resize + centre crop) + tokenizer."""
    cfg = cfg or TinyMLLMConfig()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": cfg.image_size},
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tiny_tokenizer(),
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",  # drop CLS, as LLaVA-1.5
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=TINY_CHAT_TEMPLATE,
    )


def _text_sizes(cfg: TinyMLLMConfig, tokenizer: PreTrainedTokenizerFast) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_hidden * 2,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_kv_heads,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _llava(cfg: TinyMLLMConfig) -> tuple[LlavaConfig, LlavaProcessor]:
    processor = build_tiny_processor(cfg)
    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=cfg.vision_hidden * 2,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        projection_dim=cfg.vision_hidden,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(**_text_sizes(cfg, tokenizer), tie_word_embeddings=False),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    return config, processor


def _qwen2_vl(cfg: TinyMLLMConfig) -> tuple[Qwen2VLConfig, Qwen2VLProcessor]:
    tokenizer = build_tiny_tokenizer(QWEN_CHAT_TEMPLATE)
    size = {"shortest_edge": cfg.qwen_pixels, "longest_edge": cfg.qwen_pixels}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    head_half = cfg.text_hidden // cfg.text_heads // 2  # rotary pairs per head, split t/h/w
    section = [head_half - 2 * (head_half * 3 // 8), head_half * 3 // 8, head_half * 3 // 8]
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        vision_config=dict(
            depth=cfg.vision_layers,
            embed_dim=cfg.vision_hidden,
            hidden_size=cfg.text_hidden,
            num_heads=cfg.vision_heads,
        ),
        text_config=dict(
            **_text_sizes(cfg, tokenizer),
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    return config, processor


def build_tiny_mllm(cfg: TinyMLLMConfig | None = None, seed: int = 0, family: str = "llava"):
    """Random-weight tiny model and processor; identical weights for identical `seed`.

    family: "llava" (CLIP tower + Llama) or "qwen2_vl". Returns (model, processor).
    The global torch RNG is left as it was (the init runs inside `fork_rng`).
    """
    cfg = cfg or TinyMLLMConfig()
    if family == "llava":
        config, processor = _llava(cfg)
        model_class = LlavaForConditionalGeneration
    elif family == "qwen2_vl":
        config, processor = _qwen2_vl(cfg)
        model_class = Qwen2VLForConditionalGeneration
    else:
        raise ValueError(f"unknown tiny MLLM family {family!r}; choose one of {FAMILIES}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.eval(), processor


def save_tiny_mllm(
    out_dir: str | Path, seed: int = 0, family: str = "llava", cfg: TinyMLLMConfig | None = None
) -> Path:
    """Write the tiny model (safetensors + configs), tokenizer and processor to `out_dir`.

    Returns the folder, ready for `SemanticEncoder.from_pretrained(SemanticConfig(model_path=...))`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny_mllm(cfg, seed=seed, family=family)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
