"""mPLUG-Owl2 (LLaMA-2 7B), forward only, on transformers 5.x building blocks; no remote code.

The model MA-AGIQA takes its semantic vectors from (``mplug-owl2-llama2-7b``). The original code
(X-PLUG/mPLUG-Owl, ``mPLUG-Owl2/mplug_owl2``) is written for transformers 4.3x and patches
``LlamaModel`` for the whole process; this port keeps the checkpoint's own key names and
numerics (``tests/test_mplug_owl2.py`` compares it with the original) and touches nothing global:

- ``model.vision_model``: CLIP-style ViT-L/14 at 448 px (CLS + 1024 patches = 1025 tokens);
- ``model.visual_abstractor``: 64 learned queries cross-attend (with 2-D sin-cos positions) to
  the vision tokens, ``visual_fc`` maps them to the LLM width, ``vit_eos`` is appended: 65 tokens;
- ``model.layers``: LLaMA-2 with the modality-adaptive module: ``k_proj``, ``v_proj``,
  ``input_layernorm`` and ``post_attention_layernorm`` have one branch per modality
  (``.multiway.0`` text, ``.multiway.1`` visual); ``q_proj``, ``o_proj`` and the MLP are shared.

The 65 visual tokens replace the ``<|image|>`` placeholder (id -200); the semantic vector is
the mean over all tokens of the last layer's hidden states after the final norm. The config
(``MplugOwl2Config``, re-exported here) lives in ``teacher/mplug_owl2_config.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig
from transformers.masking_utils import create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from .mplug_owl2_config import MplugOwl2Config
from .mplug_owl2_vision import VisionModel, VisualAbstractor

__all__ = ["IMAGE_TOKEN_INDEX", "IMAGE_TOKEN", "IGNORED_CHECKPOINT_KEYS", "POSITION_TABLE_KEYS", "MplugOwl2Config",
           "MplugOwl2", "LlamaSentencePieceTokenizer", "load_mplug_owl2", "prompt_text", "read_checkpoint"]

IMAGE_TOKEN_INDEX = -200  # mplug_owl2/constants.py: where the visual tokens go in input_ids
IMAGE_TOKEN = "<|image|>"  # ... and the placeholder in the prompt text
# Checkpoint entries that are not weights, rebuilt at load and never required: X-PLUG's conversion
# script (convert_mplug_owl2_weight_to_hf.py) saves every layer's RoPE ``inv_freq``.
IGNORED_CHECKPOINT_KEYS = ("rotary_emb.inv_freq",)
# The abstractor's sin-cos position tables. The released checkpoint leaves them out (rebuilt here);
# the original code registers them as persistent buffers, so its ``save_pretrained`` (and any tool
# that saves its state dict: ``.half()``/``.to(bfloat16)`` models, fine-tunes) writes them in the
# checkpoint's dtype. When present they are checked against the rebuilt table (to that dtype's
# rounding) and then used, as the original uses them.
POSITION_TABLE_KEYS = ("crossattention.attention.q_pos_embed", "crossattention.attention.k_pos_embed")
TABLE_ULPS = 2  # allowed |stored - sin-cos| in units of the stored dtype's spacing at that magnitude


# -- modality-adaptive LLaMA ------------------------------------------------------------------
class _Route:
    """Which flattened (B*T) positions are text (branch 0) and visual (branch 1); built once per forward."""

    def __init__(self, visual: torch.Tensor) -> None:
        flat = visual.reshape(-1)
        self.branches = ((~flat).nonzero().squeeze(1), flat.nonzero().squeeze(1))


class _Multiway(nn.Module):
    """One module per modality (``multiway.0`` text, ``multiway.1`` visual), applied to its own tokens."""

    def __init__(self, make: Any) -> None:
        super().__init__()
        self.multiway = nn.ModuleList([make(), make()])

    def forward(self, x: torch.Tensor, route: _Route) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        outputs = [branch(flat.index_select(0, index)) for branch, index in zip(self.multiway, route.branches)]
        out = flat.new_empty(len(flat), outputs[0].shape[-1])
        for index, value in zip(route.branches, outputs):
            out.index_copy_(0, index, value)
        return out.view(*x.shape[:-1], -1)


class _Attention(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.attention_dropout = 0.0
        width, kv_width, bias = config.hidden_size, config.num_key_value_heads * self.head_dim, config.attention_bias
        self.q_proj = nn.Linear(width, config.num_attention_heads * self.head_dim, bias=bias)
        self.k_proj = _Multiway(lambda: nn.Linear(width, kv_width, bias=bias))
        self.v_proj = _Multiway(lambda: nn.Linear(width, kv_width, bias=bias))
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, width, bias=bias)

    def forward(self, x: torch.Tensor, route: _Route, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None) -> torch.Tensor:
        shape = (*x.shape[:-1], -1, self.head_dim)
        query = self.q_proj(x).view(shape).transpose(1, 2)
        key = self.k_proj(x, route).view(shape).transpose(1, 2)
        value = self.v_proj(x, route).view(shape).transpose(1, 2)
        query, key = apply_rotary_pos_emb(query, key, *position_embeddings)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, _ = attend(self, query, key, value, mask, dropout=0.0, scaling=self.scaling)
        return self.o_proj(out.reshape(*x.shape[:-1], -1))


class _DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        norm = lambda: LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)  # noqa: E731
        self.self_attn = _Attention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = _Multiway(norm)
        self.post_attention_layernorm = _Multiway(norm)

    def forward(self, x: torch.Tensor, route: _Route, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x, route), route, position_embeddings, mask)
        return x + self.mlp(self.post_attention_layernorm(x, route))


class _Backbone(nn.Module):
    """The checkpoint's ``model.*``: LLaMA embeddings, layers and norm, plus the vision side."""

    def __init__(self, config: MplugOwl2Config) -> None:
        super().__init__()
        llama = config.llama_config()
        self.llama_config = llama
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(_DecoderLayer(llama, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(llama)  # non-persistent tables: not in the checkpoint
        self.vision_model = VisionModel(config.vision)
        self.visual_abstractor = VisualAbstractor(config.abstractor, config.hidden_size)


class MplugOwl2(nn.Module):
    """mPLUG-Owl2 LLaMA-2, forward only: images x prompts -> last-layer hidden states.

    ``lm_head`` is kept so the checkpoint loads strictly; semantic vectors never use it.
    """

    def __init__(self, config: MplugOwl2Config) -> None:
        super().__init__()
        self.config = config
        self.model = _Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, V, D) visual tokens for the LLM (V = queries + 1 = 65 for the 7B)."""
        dtype = self.model.vision_model.embeddings.patch_embed.weight.dtype
        return self.model.visual_abstractor(self.model.vision_model(pixel_values.to(dtype)))

    def splice(self, visual: torch.Tensor, prompt_ids: Sequence[Sequence[int]]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """visual (B, V, D) + P prompts with one ``IMAGE_TOKEN_INDEX`` each -> embeddings (B*P, T, D),
        attention mask (B*P, T) and visual-token flags (B*P, T); rows image-major, right-padded."""
        batch, count, width = visual.shape
        device, rows, lengths, starts = visual.device, [], [], []
        for ids in prompt_ids:
            ids = list(ids)
            if ids.count(IMAGE_TOKEN_INDEX) != 1:
                raise ValueError(f"a prompt needs exactly one image placeholder ({IMAGE_TOKEN_INDEX}), got "
                                 f"{ids.count(IMAGE_TOKEN_INDEX)}")
            at = ids.index(IMAGE_TOKEN_INDEX)
            text = self.model.embed_tokens(torch.tensor(ids[:at] + ids[at + 1:], device=device))
            text = text.to(visual.dtype).unsqueeze(0).expand(batch, -1, -1)
            rows.append(torch.cat([text[:, :at], visual, text[:, at:]], dim=1))
            lengths.append(len(ids) - 1 + count)
            starts.append(at)
        total = max(lengths)
        embeds = torch.stack([F.pad(r, (0, 0, 0, total - r.shape[1])) for r in rows], dim=1).flatten(0, 1)
        positions = torch.arange(total, device=device)
        mask = torch.stack([positions < n for n in lengths]).repeat(batch, 1)
        is_visual = torch.stack([(positions >= s) & (positions < s + count) for s in starts]).repeat(batch, 1)
        return embeds, mask.long(), is_visual

    def forward(self, pixel_values: torch.Tensor, prompt_ids: Sequence[Sequence[int]]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """B images (B, 3, S, S), P prompts -> hidden (B*P, T, D) after the final norm and mask (B*P, T).

        The vision tower runs once per image; all B*P sequences run through the LLM together.
        Rows are right-padded: with causal attention a real token only sees earlier tokens, which
        are all real, so pads need no mask and change no real token (pool with ``mask``).
        """
        embeds, mask, is_visual = self.splice(self.encode_images(pixel_values), prompt_ids)
        return self.language_forward(embeds, is_visual), mask

    def language_forward(self, embeds: torch.Tensor, is_visual: torch.Tensor) -> torch.Tensor:
        """embeds (N, T, D), is_visual (N, T) -> last hidden states (N, T, D) after the final norm."""
        backbone = self.model
        positions = torch.arange(embeds.shape[1], device=embeds.device).unsqueeze(0)
        causal = create_causal_mask(config=backbone.llama_config, inputs_embeds=embeds, attention_mask=None,
                                    cache=None, position_ids=positions)
        rope = backbone.rotary_emb(embeds, position_ids=positions)
        route, x = _Route(is_visual), embeds
        for layer in backbone.layers:
            x = layer(x, route, rope, causal)
        return backbone.norm(x)


# -- loading ----------------------------------------------------------------------------------
def _checkpoint_files(folder: Path) -> list[Path]:
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{index}: not a valid shard index ({err})") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise FileNotFoundError(f"{index} lists shards that are missing: {missing}")
            return [folder / s for s in shards]
        if (folder / single).is_file():
            return [folder / single]
    raise FileNotFoundError(f"{folder}: no model.safetensors, pytorch_model.bin or their .index.json shard index")


def read_checkpoint(folder: str | Path, dtype: torch.dtype | None = None,
                    device: torch.device | str = "cpu", *, keep_dtype: tuple[str, ...] = (),
                    sources: dict[str, Path] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder (safetensors or ``.bin`` shards, read with
    ``weights_only=True``), floating tensors cast to ``dtype`` (except names ending in ``keep_dtype``,
    kept as stored), moved to ``device`` shard by shard. ``sources`` (if given) gets name -> shard file."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in _checkpoint_files(Path(folder)):
        try:
            if path.suffix == ".safetensors":
                shard = load_file(str(path))
            else:
                try:  # memory-mapped: a 10 GB shard is not copied into RAM first
                    shard = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # files saved before the zip format cannot be mapped
                    shard = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # corrupt or pickled-with-code files: one clear line
            raise ValueError(f"{path}: cannot read checkpoint shard ({type(err).__name__}: {err})") from None
        for name, tensor in shard.items():
            cast = (dtype if dtype is not None and tensor.is_floating_point() and not name.endswith(keep_dtype)
                    else tensor.dtype)
            state[name] = tensor.to(device=device, dtype=cast)
            if sources is not None:
                sources[name] = path
    return state


def load_mplug_owl2(folder: str | Path, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> tuple[MplugOwl2, list[str]]:
    """Build from config.json and load the weights strictly by the checkpoint's key names.

    Returns the model (eval mode) and the checkpoint keys that were ignored (``IGNORED_CHECKPOINT_KEYS``:
    RoPE ``inv_freq``, rebuilt). The abstractor's position tables are rebuilt when the checkpoint has
    none; stored ones (``POSITION_TABLE_KEYS``) are used, kept in float32 (exact for fp16/bf16 copies),
    after a check that they are the sin-cos table to the rounding of their stored dtype (else a
    one-line error naming the file, the key and the largest difference). Any other missing or
    extra key is an error.
    """
    folder, device = Path(folder), torch.device(device)
    config = MplugOwl2Config.from_pretrained(folder)
    try:
        with torch.device("meta"):
            model = MplugOwl2(config)
    except Exception as err:  # a config the checks above let through but the layers reject: one line
        raise ValueError(f"{folder / 'config.json'}: cannot build mPLUG-Owl2 from it "
                         f"({type(err).__name__}: {err})") from None
    sources: dict[str, Path] = {}
    state = read_checkpoint(folder, dtype, device, keep_dtype=POSITION_TABLE_KEYS, sources=sources)
    rebuilt = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    ignored = sorted(k for k in state if k.endswith(IGNORED_CHECKPOINT_KEYS))
    stored_tables = {key: state.pop(key) for key in sorted(state) if key.endswith(POSITION_TABLE_KEYS)
                     and key in rebuilt}
    for key in ignored:
        del state[key]
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{folder}: checkpoint does not match the mPLUG-Owl2 config: missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}")
    model.load_state_dict(state, strict=True, assign=True)
    with torch.device(device):
        model.model.rotary_emb = LlamaRotaryEmbedding(model.model.llama_config)
    model.model.visual_abstractor.build_position_tables(device)
    buffers = dict(model.named_buffers())
    for key, stored in stored_tables.items():
        _check_table(stored, buffers[key], sources[key], key)
        owner, name = key.rsplit(".", 1)  # the original's forward adds the stored values: so do we
        model.get_submodule(owner).register_buffer(name, stored.to(torch.float32), persistent=False)
    return model.eval(), ignored


def _check_table(stored: torch.Tensor, rebuilt: torch.Tensor, path: Path, key: str) -> None:
    """A stored position table must be the float32 sin-cos table ``rebuilt`` up to the rounding of its
    own dtype: |stored - rebuilt| <= TABLE_ULPS * eps(dtype) * max(|rebuilt|, smallest normal)."""
    kind = str(stored.dtype).removeprefix("torch.")
    where = f"{path}: checkpoint entry {key} {tuple(stored.shape)} {kind}"
    if stored.shape != rebuilt.shape or not stored.is_floating_point():
        raise ValueError(f"{where} is not the abstractor's sin-cos position table {tuple(rebuilt.shape)} float; "
                         "the checkpoint does not match this model's config")
    info = torch.finfo(stored.dtype)
    rebuilt = rebuilt.to(stored.device, torch.float64)
    diff = (stored.double() - rebuilt).abs()
    allowed = TABLE_ULPS * info.eps * rebuilt.abs().clamp_min(info.tiny)
    excess = diff - allowed
    worst = int(excess.argmax())
    if float(excess.reshape(-1)[worst]) > 0:
        at = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), diff.shape))
        raise ValueError(f"{where} is not the abstractor's sin-cos position table to {kind} rounding: "
                         f"largest difference {float(diff.max()):.3g} (at {at}: stored "
                         f"{float(stored.reshape(-1)[worst]):.6g}, sin-cos {float(rebuilt.reshape(-1)[worst]):.6g}, "
                         f"allowed {float(allowed.reshape(-1)[worst]):.3g}); the checkpoint does not match this model")


# -- prompt and tokenizer ---------------------------------------------------------------------
def prompt_text(question: str) -> str:
    """conv_templates["mplug_owl2"] with the image after the question, as MA-AGIQA's getFeature.py:
    roles USER/ASSISTANT, separator " ", no system prompt."""
    return f"USER: {question}\n{IMAGE_TOKEN} ASSISTANT:"


def _token_text(value: Any, default: str) -> str:
    """A special token as tokenizer_config.json stores it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return str(value.get("content", default))
    return default if value is None else str(value)


class LlamaSentencePieceTokenizer:
    """The slow (sentencepiece) LLaMA tokenizer of transformers 4.3x, which mPLUG-Owl2 was used with
    (``AutoTokenizer.from_pretrained(path, use_fast=False)``), for text without special tokens.

    transformers 5 only ships the converted ``tokenizers`` LLaMA tokenizer, and that one gives
    other ids for a chunk that starts with a space (`` ASSISTANT:``), so the ids here come from
    ``tokenizer.model`` directly. ``legacy`` follows tokenizer_config.json (absent = 4.3x's
    default, legacy; Llama-2's own config says false, which needs ``protobuf``). The tests check
    each mode against ids recorded under 4.32, but for these prompts (no special tokens inside the
    text, the only place 4.3x's two modes part) both modes give the same ids, so the tests do not
    tell the modes apart: a mix-up of the two would pass them.
    """

    def __init__(self, model_file: str | Path, *, add_bos_token: bool = True, add_eos_token: bool = False,
                 legacy: bool = True, bos_token: str = "<s>", eos_token: str = "</s>",
                 unk_token: str = "<unk>") -> None:
        import sentencepiece as spm

        self.processor = spm.SentencePieceProcessor(model_file=str(model_file))
        self.legacy, self.add_bos_token, self.add_eos_token = legacy, add_bos_token, add_eos_token
        self.special = (bos_token, eos_token, unk_token)
        self.unk_token = unk_token
        self.bos_token_id = self.processor.piece_to_id(bos_token)
        self.eos_token_id = self.processor.piece_to_id(eos_token)
        if not legacy:  # 4.3x non-legacy: the model without its dummy prefix, text behind a "<unk>" anchor
            try:
                from sentencepiece import sentencepiece_model_pb2
            except ImportError as err:
                raise ImportError(f"{model_file}: a non-legacy LLaMA tokenizer needs protobuf "
                                  f"(pip install protobuf): {err}") from None

            proto = sentencepiece_model_pb2.ModelProto.FromString(self.processor.serialized_model_proto())
            proto.normalizer_spec.add_dummy_prefix = False
            self.processor = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
            self._unk_length = len(self.processor.encode(unk_token))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LlamaSentencePieceTokenizer:
        folder = Path(folder)
        if not (folder / "tokenizer.model").is_file():
            raise FileNotFoundError(f"{folder}: no tokenizer.model (the sentencepiece LLaMA tokenizer)")
        config_file = folder / "tokenizer_config.json"
        try:
            config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        except ValueError as err:
            raise ValueError(f"{config_file}: not valid JSON ({err})") from None
        legacy = config.get("legacy")
        return cls(folder / "tokenizer.model", add_bos_token=bool(config.get("add_bos_token", True)),
                   add_eos_token=bool(config.get("add_eos_token", False)),
                   legacy=True if legacy is None else bool(legacy),
                   bos_token=_token_text(config.get("bos_token"), "<s>"),
                   eos_token=_token_text(config.get("eos_token"), "</s>"),
                   unk_token=_token_text(config.get("unk_token"), "<unk>"))

    def encode(self, text: str) -> list[int]:
        """``tokenizer(text).input_ids`` of the 4.3x slow tokenizer: BOS + pieces (+ EOS if configured)."""
        if any(token in text for token in self.special):
            raise ValueError(f"prompt text must not contain the special tokens {self.special}")
        if self.legacy:
            ids = self.processor.encode(text) if text else []
        elif text:
            text = "\u2581" + text.replace("\u2581", " ")
            ids = self.processor.encode(self.unk_token + text)[self._unk_length:]
        else:
            ids = []
        bos = [self.bos_token_id] if self.add_bos_token else []
        return bos + ids + ([self.eos_token_id] if self.add_eos_token else [])

    def image_prompt_ids(self, prompt: str) -> list[int]:
        """``tokenizer_image_token``: tokenise around ``<|image|>``, keep one BOS, put -200 between chunks."""
        chunks = [self.encode(chunk) if chunk else [] for chunk in prompt.split(IMAGE_TOKEN)]
        offset = 1 if chunks and chunks[0] and chunks[0][0] == self.bos_token_id else 0
        ids = chunks[0][:offset]
        for index, chunk in enumerate(chunks):
            if index:  # the original's separator [-200] * (offset + 1), cut by the same [offset:] as chunks
                ids.append(IMAGE_TOKEN_INDEX)
            ids.extend(chunk[offset:])
        return ids
