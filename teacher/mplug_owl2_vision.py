"""mPLUG-Owl2's vision side: the CLIP-style ViT (``model.vision_model``) and the visual abstractor
(``model.visual_abstractor``), with the checkpoint's own module names. See ``teacher/mplug_owl2.py``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

__all__ = ["VisionConfig", "AbstractorConfig", "VisionModel", "VisualAbstractor", "position_tables"]


@dataclass(frozen=True)
class VisionConfig:
    """``visual_config.visual_model`` of config.json; defaults = the released model."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 448
    patch_size: int = 14
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-6
    use_cls_token: bool = True
    use_post_layernorm: bool = True


@dataclass(frozen=True)
class AbstractorConfig:
    """``visual_config.visual_abstractor`` of config.json; defaults = the released model."""

    hidden_size: int = 1024
    encoder_hidden_size: int = 1024
    num_hidden_layers: int = 6
    num_attention_heads: int = 16
    intermediate_size: int = 2816
    num_learnable_queries: int = 64
    grid_size: int = 32  # vision patches per side (448 / 14)
    layer_norm_eps: float = 1e-6  # ffn_ln only; the other abstractor LayerNorms use torch's 1e-5
    use_cls_token: bool = True
    add_v2t_pos_emb: bool = False


# -- vision encoder ---------------------------------------------------------------------------
class _VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        patches = (cfg.image_size // cfg.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.patch_embed = nn.Conv2d(3, cfg.hidden_size, cfg.patch_size, cfg.patch_size, bias=False)
        self.position_embedding = nn.Parameter(torch.zeros(1, patches + 1, cfg.hidden_size))
        self.pre_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(patches), 1, -1).to(patches.dtype), patches], dim=1)
        return self.pre_layernorm(tokens + self.position_embedding[:, : tokens.shape[1]].to(patches.dtype))


class _VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.query_key_value = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        # The fused projection is laid out per head as (q, k, v): (B, N, heads, 3, head_dim).
        qkv = self.query_key_value(x).reshape(batch, length, self.num_heads, 3, -1).permute(3, 0, 2, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.dense(out.transpose(1, 2).reshape(batch, length, width))


class _VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = ACT2FN[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _VisionLayer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = _VisionAttention(cfg)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = _VisionMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class _VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_VisionLayer(cfg) for _ in range(cfg.num_hidden_layers))


class VisionModel(nn.Module):
    """pixels (B, 3, S, S) -> (B, 1 + (S/patch)^2, width) after ``post_layernorm``."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.embeddings = _VisionEmbeddings(cfg)
        self.encoder = _VisionEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


# -- visual abstractor ------------------------------------------------------------------------
def _sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """MAE's 1-D sin-cos table: positions (M,) -> (M, dim), float32.

    Computed in numpy float32 step by step as the original does, so the tables equal the
    original's (and any copy saved in a checkpoint) to float32 rounding, not just approximately.
    """
    omega = np.arange(dim // 2, dtype=np.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    angles = np.einsum("m,d->md", positions.reshape(-1).astype(np.float32), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def _sincos_2d(dim: int, grid: int, cls_token: bool) -> np.ndarray:
    """MAE's 2-D table over a grid x grid patch layout (+ a zero row for CLS): (grid^2 [+1], dim).
    The first half of the channels encodes the column, the second the row."""
    coords = np.arange(grid, dtype=np.float32)
    cols, rows = np.meshgrid(coords, coords)
    table = np.concatenate([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], axis=1)
    return np.concatenate([np.zeros((1, dim)), table], axis=0) if cls_token else table


def position_tables(cfg: AbstractorConfig) -> dict[str, torch.Tensor]:
    """The abstractor's fixed query/key position tables, float32: ``q_pos_embed`` (Q, C) and
    ``k_pos_embed`` (grid^2 [+1], C)."""
    queries = np.arange(cfg.num_learnable_queries, dtype=np.float32)
    return {"q_pos_embed": torch.from_numpy(_sincos_1d(cfg.hidden_size, queries)).float(),
            "k_pos_embed": torch.from_numpy(_sincos_2d(cfg.hidden_size, cfg.grid_size, cfg.use_cls_token)).float()}


class _AbstractorAttention(nn.Module):
    def __init__(self, cfg: AbstractorConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.encoder_hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.encoder_hidden_size, cfg.hidden_size)
        self.build_position_tables(cfg)

    def build_position_tables(self, cfg: AbstractorConfig, device: torch.device | str | None = None) -> None:
        """(Re)build the fixed position tables. Non-persistent: X-PLUG's conversion script does not
        save them in the released checkpoint (the original rebuilds them in ``__init__``); a
        checkpoint that holds them replaces them at load (``load_mplug_owl2``)."""
        for name, table in position_tables(cfg).items():
            self.register_buffer(name, table if device is None else table.to(device), persistent=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """queries (B, Q, C) attend to keys = [queries; vision tokens] (B, Q + N, C); no mask."""
        q_pos = self.q_pos_embed.to(queries.dtype)
        k_pos = torch.cat([self.q_pos_embed, self.k_pos_embed]).to(queries.dtype)
        out = F.scaled_dot_product_attention(self._heads(self.query(queries + q_pos)),
                                             self._heads(self.key(keys + k_pos)), self._heads(self.value(keys)))
        return out.transpose(1, 2).flatten(2)


class _AbstractorMLP(nn.Module):
    def __init__(self, cfg: AbstractorConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.w2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.w3 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.ffn_ln = nn.LayerNorm(cfg.intermediate_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.ffn_ln(F.silu(self.w1(x)) * self.w3(x)))


class _AbstractorOutput(nn.Module):
    def __init__(self, cfg: AbstractorConfig) -> None:
        super().__init__()
        self.out_proj = nn.Linear(cfg.encoder_hidden_size, cfg.encoder_hidden_size)
        self.norm2 = nn.LayerNorm(cfg.encoder_hidden_size)
        self.mlp = _AbstractorMLP(cfg)


class _CrossAttention(nn.Module):
    def __init__(self, cfg: AbstractorConfig) -> None:
        super().__init__()
        self.attention = _AbstractorAttention(cfg)
        self.output = _AbstractorOutput(cfg)
        self.norm1 = nn.LayerNorm(cfg.encoder_hidden_size)
        self.normk = nn.LayerNorm(cfg.encoder_hidden_size)

    def forward(self, queries: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        queries = self.norm1(queries)  # the residual below is the *normalised* queries, as in the original
        context = self.attention(queries, torch.cat([queries, self.normk(vision)], dim=1))
        x = queries + self.output.out_proj(context)
        return x + self.output.mlp(self.output.norm2(x))


class _AbstractorLayer(nn.Module):
    def __init__(self, cfg: AbstractorConfig) -> None:
        super().__init__()
        self.crossattention = _CrossAttention(cfg)


class _AbstractorEncoder(nn.Module):
    def __init__(self, cfg: AbstractorConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_AbstractorLayer(cfg) for _ in range(cfg.num_hidden_layers))


class VisualAbstractor(nn.Module):
    """vision tokens (B, N, C) -> (B, queries + 1, llm width): queries, then ``vit_eos``."""

    def __init__(self, cfg: AbstractorConfig, language_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = _AbstractorEncoder(cfg)
        self.visual_fc = nn.Linear(cfg.hidden_size, language_width)
        self.query_embeds = nn.Parameter(torch.zeros(1, cfg.num_learnable_queries, cfg.hidden_size))
        self.vit_eos = nn.Parameter(torch.zeros(1, 1, language_width))

    def build_position_tables(self, device: torch.device | str | None = None) -> None:
        """Rebuild every layer's fixed position tables on ``device`` (after a meta-device load)."""
        for layer in self.encoder.layers:
            layer.crossattention.attention.build_position_tables(self.cfg, device)

    def forward(self, vision: torch.Tensor) -> torch.Tensor:
        x = self.query_embeds.expand(len(vision), -1, -1)
        for layer in self.encoder.layers:
            x = layer.crossattention(x, vision)
        x = self.visual_fc(x)
        return torch.cat([x, self.vit_eos.expand(len(x), -1, -1).to(x.dtype)], dim=1)
