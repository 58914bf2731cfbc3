"""mPLUG-Owl2's ``config.json`` (its own field names) as a checked dataclass; see ``teacher/mplug_owl2.py``.

Only the fields the native port reads are kept; :meth:`MplugOwl2Config.from_dict` checks kinds,
positivity and the shape constraints the model relies on, with one ValueError naming the entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from transformers import LlamaConfig

from .mplug_owl2_vision import AbstractorConfig, VisionConfig

__all__ = ["MplugOwl2Config"]


def _pick(cls, raw: dict[str, Any]):
    """Build a config dataclass from the fields of ``raw`` it knows (config.json holds many more)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in names and k not in ("vision", "abstractor")})


def _check_fields(config: Any, section: str) -> None:
    """Each field of a config dataclass has its declared kind: ints and floats > 0, bools, known
    activations. Raises one ValueError naming the config.json entry."""
    from transformers.activations import ACT2FN

    for item in fields(config):
        value, kind, name = getattr(config, item.name), str(item.type), f"{section}{item.name}"
        if value is None and kind.endswith("| None"):
            continue
        if kind.startswith("int") and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
        if kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        if item.name == "hidden_act" and (not isinstance(value, str) or value not in ACT2FN):
            raise ValueError(f"{name} must be an activation name such as 'silu', got {value!r}")


def _check_divides(section: str, width: int, heads: int, heads_name: str = "num_attention_heads") -> None:
    if width % heads:
        raise ValueError(f"{section}hidden_size {width} is not divisible by {heads_name} {heads}")


@dataclass(frozen=True)
class MplugOwl2Config:
    """config.json of an mPLUG-Owl2 LLaMA-2 checkpoint (its own field names); defaults = 7B."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    abstractor: AbstractorConfig = field(default_factory=AbstractorConfig)
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None = num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"type": "linear" | "dynamic", "factor": f}, as in 4.3x
    attention_bias: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MplugOwl2Config:
        if raw.get("model_type") != "mplug_owl2":
            raise ValueError(f"model_type is {raw.get('model_type')!r}, expected 'mplug_owl2'")
        visual = raw.get("visual_config") or {}
        config = _pick(cls, raw)
        config = cls(**{**{f.name: getattr(config, f.name) for f in fields(cls)},
                        "vision": _pick(VisionConfig, visual.get("visual_model") or {}),
                        "abstractor": _pick(AbstractorConfig, visual.get("visual_abstractor") or {})})
        config.validate()
        if not config.vision.use_cls_token or not config.abstractor.use_cls_token or config.abstractor.add_v2t_pos_emb:
            raise ValueError("only the released layout is supported (use_cls_token=true, add_v2t_pos_emb=false)")
        return config

    def validate(self) -> None:
        """Kinds, positivity and the shape constraints the model relies on; one ValueError naming the entry."""
        vision, abstractor = "visual_config.visual_model.", "visual_config.visual_abstractor."
        _check_fields(self, "")
        _check_fields(self.vision, vision)
        _check_fields(self.abstractor, abstractor)
        _check_divides("", self.hidden_size, self.num_attention_heads)
        kv_heads = self.num_key_value_heads or self.num_attention_heads
        if self.num_attention_heads % kv_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not divisible by "
                             f"num_key_value_heads {kv_heads}")
        _check_divides(vision, self.vision.hidden_size, self.vision.num_attention_heads)
        _check_divides(abstractor, self.abstractor.hidden_size, self.abstractor.num_attention_heads)
        _check_divides(abstractor, self.abstractor.hidden_size, 4, "4 (2-D sin-cos position table)")
        if self.vision.image_size % self.vision.patch_size:
            raise ValueError(f"{vision}image_size {self.vision.image_size} is not divisible by patch_size "
                             f"{self.vision.patch_size}")
        if self.vision.image_size // self.vision.patch_size != self.abstractor.grid_size:
            raise ValueError(f"{abstractor}grid_size {self.abstractor.grid_size} must be "
                             f"{vision}image_size / patch_size = {self.vision.image_size // self.vision.patch_size}")
        if not self.vision.hidden_size == self.abstractor.encoder_hidden_size == self.abstractor.hidden_size:
            raise ValueError(f"{abstractor}hidden_size and encoder_hidden_size must equal {vision}hidden_size "
                             f"({self.abstractor.hidden_size}, {self.abstractor.encoder_hidden_size}, "
                             f"{self.vision.hidden_size})")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> MplugOwl2Config:
        path = Path(folder) / "config.json"
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: not an mPLUG-Owl2 config ({err})") from None

    def llama_config(self) -> LlamaConfig:
        """The transformers LlamaConfig the LLaMA building blocks (MLP, RoPE, masks) read."""
        scaling = dict(self.rope_scaling) if self.rope_scaling else None
        config = LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads or self.num_attention_heads, hidden_act=self.hidden_act,
            max_position_embeddings=self.max_position_embeddings, rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta, rope_scaling=scaling, attention_bias=self.attention_bias)
        config._attn_implementation = "sdpa"
        return config
