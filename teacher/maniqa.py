"""MANIQA (Yang et al., CVPRW 2022, IIGROUP/MANIQA) as MA-AGIQA (wangpuyi/MA-AGIQA) uses it.

``vit`` (timm ViT-B/8 @ 224) -> outputs of blocks 6..9 without the class token, concatenated (B, 784, 3072)
-> ``tablock1`` (2 transposed-attention blocks) -> ``conv1`` 1x1 3072->768 -> ``swintransformer1`` -> ``tablock2``
-> ``conv2`` 1x1 768->384 -> ``swintransformer2`` -> per patch ``fc_score`` (ReLU) and ``fc_weight`` (sigmoid);
score = sum(score * weight) / sum(weight). Official attribute names, so official/pyiqa state dicts load unchanged.
MA-AGIQA's MANIQA "quality feature" is the per-patch ``score * weight`` (B, 784). Kept only for strict loading,
never affecting an output: ViT blocks after the last tap, ``vit.norm``, ``vit.head`` and
``swintransformer{1,2}.downsample`` (built, never called, as official). Input: RGB [0, 1] normalised with mean 0.5 /
std 0.5, exactly 224 x 224; higher score = better. MA-AGIQA resizes the whole image to 224 x 224 (cv2 INTER_CUBIC)
and scores it once; official MANIQA averages 224 crops (`crop_boxes`; the teacher averages them in `Teacher.label`).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from _agiqa.checkpoints import shapes, state_mismatch

from .state_dict import read_state_dict

MANIQA_MEAN = (0.5, 0.5, 0.5)  # per-channel mean for RGB in [0, 1] (official `Normalize(0.5, 0.5)`)
MANIQA_STD = (0.5, 0.5, 0.5)  # per-channel std


def normalize(images: Tensor) -> Tensor:
    """RGB in [0, 1], (B, 3, H, W) -> MANIQA input range [-1, 1]."""
    mean, std = images.new_tensor(MANIQA_MEAN).view(1, 3, 1, 1), images.new_tensor(MANIQA_STD).view(1, 3, 1, 1)
    return (images - mean) / std


@dataclass(frozen=True)
class ManiqaConfig:
    img_size: int = 224  # input side in pixels; MANIQA takes exactly this size (crop or resize first)
    patch_size: int = 8  # ViT patch side; (img_size // patch_size) ** 2 = 784 patches = TA block width
    vit_embed_dim: int = 768  # ViT width (timm vit_base_patch8_224)
    vit_depth: int = 12  # ViT blocks built; all kept for strict loading, only up to max(tap_blocks) run
    vit_num_heads: int = 12  # ViT attention heads
    vit_num_classes: int = 1000  # ImageNet head of the timm ViT: unused, kept for strict loading
    tap_blocks: tuple[int, ...] = (6, 7, 8, 9)  # 0-based ViT blocks whose outputs (no class token) are concatenated
    embed_dim: int = 768  # stage-1 width: conv1 maps len(tap_blocks) * vit_embed_dim -> embed_dim; stage 2 uses half
    num_tab: int = 2  # transposed-attention blocks before conv1 and before conv2
    depths: tuple[int, ...] = (2, 2)  # Swin blocks per layer of each scale-Swin stage
    num_heads: tuple[int, ...] = (4, 4)  # attention heads per layer of each scale-Swin stage
    window_size: int = 4  # Swin window side in patches; every odd block shifts by window_size // 2
    dim_mlp: int = 768  # hidden width of the Swin MLPs (both stages)
    scale: float = 0.8  # Swin layer residual: x = scale * layer(x) + x (0.8 KonIQ/KADID/MA-AGIQA; 0.13 PIPAL22)
    drop: float = 0.1  # dropout of the TA blocks, the Swin input and the score/weight heads
    drop_path_rate: float = 0.1  # Swin stochastic depth, 0 -> rate linearly over the blocks of a stage
    stem: str = "patch"  # ViT patch embedding: "patch" (official, linear) | "contrast" (MSCNPatchEmbed, from scratch)
    stem_width: int = 16  # "contrast" only: channels of its first convolution (doubling to at most 8x)

    def __post_init__(self) -> None:
        if self.stem not in STEMS:
            raise ValueError(f"unknown MANIQA stem {self.stem!r}; valid: {', '.join(STEMS)}")
        if self.stem == "contrast" and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"the contrast stem needs a power-of-two patch_size, got {self.patch_size}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        taps = list(self.tap_blocks)
        if not taps or taps != sorted(set(taps)) or taps[0] < 0 or taps[-1] >= self.vit_depth:
            raise ValueError(f"tap_blocks {self.tap_blocks} must be increasing blocks of a {self.vit_depth}-block ViT")
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} differ in length")

    @property
    def grid_size(self) -> int:  # patches per side (28)
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:  # patches per image = length of the quality feature (784)
        return self.grid_size**2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ManiqaConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ---------------------------------------------------------------------------------------------- modules
STEMS = ("patch", "contrast")


class MSCNPatchEmbed(nn.Module):
    """The ViT patch embedding of a MANIQA trained from random weights: local contrast
    normalisation, then a convolutional stem. ``(B, 3, H, W)`` in [-1, 1] -> ``(B, embed_dim, H / p, W / p)``.

    Why: MANIQA's quality sense comes from an ImageNet ViT. From random weights, its linear patch
    embedding cannot measure local energy (blur, noise and blocking are energy *relative to the
    content*), and a few hundred steps do not teach it (held-out SRCC about 0.45 on the demo set).
    Two standard remedies make it learn within the demo's budget (0.9): the MSCN coefficients of
    BRISQUE (Mittal et al. 2012), the local contrast normalisation CNNIQA (Kang et al. 2014)
    learns from, divide out the content's contrast; and 3 x 3 stride-2 convolutions in place of the
    patchify layer (Xiao et al. 2021, "Early convolutions help transformers see better") give the
    nonlinearity that turns them into energy. The RGB image rides along beside the coefficients.
    """

    def __init__(self, embed_dim: int, patch_size: int, width: int = 16) -> None:
        super().__init__()
        taps = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / (2 * (7 / 6) ** 2))  # BRISQUE's 7 x 7 Gaussian, sigma 7/6
        taps = taps / taps.sum()
        self.register_buffer("window", (taps[:, None] * taps[None]).expand(6, 1, 7, 7).clone(), persistent=False)
        layers: list[nn.Module] = []
        channels = 6
        for i in range(patch_size.bit_length() - 1):  # log2(patch_size) stride-2 convolutions
            out = width * min(2**i, 8)
            layers += [nn.Conv2d(channels, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        layers.append(nn.Conv2d(channels, embed_dim, 1))
        self.convs = nn.Sequential(*layers)

    def mscn(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> MSCN coefficients (I - mu) / (sigma + 1) on the 0-255 scale, (B, 3, H, W)."""
        grey_levels = ((x + 1) * 127.5).contiguous(memory_format=torch.channels_last)  # depthwise: 10x faster
        moments = nn.functional.conv2d(nn.functional.pad(torch.cat([grey_levels, grey_levels.square()], 1),
                                                         (3, 3, 3, 3), mode="replicate"), self.window, groups=6)
        mu, second = moments[:, :3], moments[:, 3:]
        return (grey_levels - mu) / ((second - mu.square()).clamp_min(0).sqrt() + 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(torch.cat([self.mscn(x), x], 1))


class TABlock(nn.Module):
    """Transposed attention: tokens are the C channels, each a length-N (784 patch) vector. (B, C, N) -> same."""

    def __init__(self, dim: int, drop: float) -> None:
        super().__init__()
        self.c_q, self.c_k, self.c_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_fact = dim**-0.5
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        b, c, n = x.shape
        attn = (self.c_q(x) @ self.c_k(x).transpose(1, 2) * self.norm_fact).softmax(dim=-1)  # (B, C, C)
        # Official quirk kept for weight compatibility: (B, C, N) -> transpose -> reshape, not a transpose back.
        return x + self.proj_drop((attn @ self.c_v(x)).transpose(1, 2).reshape(b, c, n))


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(fc1=nn.Linear(dim, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, dim)))


def _windows(x: Tensor, w: int) -> Tensor:  # (B, H, W, C) -> (B * nW, w * w, C), windows row-major
    b, h, wd, c = x.shape
    return x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def _unwindows(x: Tensor, w: int, h: int, wd: int) -> Tensor:  # inverse of `_windows`
    c = x.shape[-1]
    return x.view(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, h, wd, c)


class _WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (w*w, w*w, 2)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = (q * self.scale) @ k.transpose(-2, -1) + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(bw // nw, nw, self.heads, n, n) + mask[None, :, None]).view(bw, self.heads, n, n)
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c))


class _SwinBlock(nn.Module):
    def __init__(self, dim: int, grid: int, heads: int, window: int, shift: int, hidden: int, dpr: float) -> None:
        super().__init__()
        if grid <= window:  # window covers the whole grid: no partition, no shift (as official)
            window, shift = grid, 0
        self.grid, self.window, self.shift = grid, window, shift
        self.norm1, self.attn = nn.LayerNorm(dim), _WindowAttention(dim, window, heads)
        self.drop_path = DropPath(dpr) if dpr > 0 else nn.Identity()
        self.norm2, self.mlp = nn.LayerNorm(dim), _mlp(dim, hidden)
        mask = None
        if shift > 0:  # label the 3 x 3 regions the cyclic shift brings together; mask pairs across regions
            bands = torch.zeros(grid, dtype=torch.long)
            bands[grid - window :], bands[grid - shift :] = 1, 2
            ids = _windows((bands[:, None] * 3 + bands[None, :]).float()[None, :, :, None], window).squeeze(-1)
            mask = (ids[:, None, :] != ids[:, :, None]).float() * -100.0  # (nW, w*w, w*w)
        self.register_buffer("attn_mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        g, w, s = self.grid, self.window, self.shift
        y = self.norm1(x).view(b, g, g, c)
        y = torch.roll(y, shifts=(-s, -s), dims=(1, 2)) if s else y
        y = _unwindows(self.attn(_windows(y, w), self.attn_mask), w, g, g)
        y = torch.roll(y, shifts=(s, s), dims=(1, 2)) if s else y
        x = x + self.drop_path(y.reshape(b, n, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class _SwinLayer(nn.Module):
    """Swin blocks, then a 3x3 conv + ReLU on the patch grid. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, grid: int, depth: int, heads: int, window: int, hidden: int, dpr: list[float]):
        super().__init__()
        self.grid = grid
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)
        shifts = [0 if i % 2 == 0 else window // 2 for i in range(depth)]
        self.blocks = nn.ModuleList(_SwinBlock(dim, grid, heads, window, s, hidden, p) for s, p in zip(shifts, dpr))

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        b, n, c = x.shape
        return torch.relu(self.conv(x.transpose(1, 2).reshape(b, c, self.grid, self.grid))).flatten(2).transpose(1, 2)


class ScaleSwin(nn.Module):
    """MANIQA's scale Swin stage: per layer x = scale * layer(x) + x. (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, cfg: ManiqaConfig, dim: int) -> None:
        super().__init__()
        self.scale = cfg.scale
        self.dropout = nn.Dropout(cfg.drop)
        self.downsample = nn.Conv2d(dim, dim, 3, 2, 1)  # built by the official code, never used in forward
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        starts = np.cumsum((0,) + tuple(cfg.depths)).tolist()
        self.layers = nn.ModuleList(
            _SwinLayer(dim, cfg.grid_size, d, h, cfg.window_size, cfg.dim_mlp, dpr[starts[i] : starts[i + 1]])
            for i, (d, h) in enumerate(zip(cfg.depths, cfg.num_heads)))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = self.dropout(x).flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = self.scale * layer(x) + x
        return x.transpose(1, 2).reshape(b, c, h, w)


def _head(dim: int, drop: float, act: nn.Module) -> nn.Sequential:  # fc_score / fc_weight
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(drop), nn.Linear(dim, 1), act)


class Maniqa(nn.Module):
    """MANIQA. Inputs are (B, 3, 224, 224) RGB normalised with MANIQA_MEAN / MANIQA_STD (see `normalize`)."""

    def __init__(self, cfg: ManiqaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.vit = VisionTransformer(  # timm vit_base_patch8_224 layout (qkv bias, LayerNorm eps 1e-6), random init
            img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.vit_embed_dim, depth=cfg.vit_depth,
            num_heads=cfg.vit_num_heads, num_classes=cfg.vit_num_classes)
        if cfg.stem == "contrast":
            self.vit.patch_embed.proj = MSCNPatchEmbed(cfg.vit_embed_dim, cfg.patch_size, cfg.stem_width)
        n, d = cfg.num_patches, cfg.embed_dim
        self.tablock1 = nn.ModuleList(TABlock(n, cfg.drop) for _ in range(cfg.num_tab))
        self.conv1 = nn.Conv2d(cfg.vit_embed_dim * len(cfg.tap_blocks), d, 1, 1, 0)
        self.swintransformer1 = ScaleSwin(cfg, d)
        self.tablock2 = nn.ModuleList(TABlock(n, cfg.drop) for _ in range(cfg.num_tab))
        self.conv2 = nn.Conv2d(d, d // 2, 1, 1, 0)
        self.swintransformer2 = ScaleSwin(cfg, d // 2)
        self.fc_score = _head(d // 2, cfg.drop, nn.ReLU())
        self.fc_weight = _head(d // 2, cfg.drop, nn.Sigmoid())

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, 224, 224) -> per-patch features after both stages, (B, 784, embed_dim // 2)."""
        s, g = self.config.img_size, self.config.grid_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"MANIQA expects (B, 3, {s}, {s}) normalised images, got {tuple(x.shape)}")
        taps = self.vit.forward_intermediates(  # block outputs (B, 784, vit_embed_dim), class token dropped
            x, indices=list(self.config.tap_blocks), stop_early=True, output_fmt="NLC", intermediates_only=True)
        x = torch.cat(taps, dim=2).transpose(1, 2)  # (B, C, N)
        for tab in self.tablock1:
            x = tab(x)
        x = self.swintransformer1(self.conv1(x.unflatten(2, (g, g)))).flatten(2)
        for tab in self.tablock2:
            x = tab(x)
        return self.swintransformer2(self.conv2(x.unflatten(2, (g, g)))).flatten(2).transpose(1, 2)

    def forward_head(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 784, C) features -> (patch_scores (B, 784) >= 0, patch_weights (B, 784) in (0, 1))."""
        return self.fc_score(features).squeeze(-1), self.fc_weight(features).squeeze(-1)

    def forward_patches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, 224, 224) -> (patch_scores (B, 784), patch_weights (B, 784))."""
        return self.forward_head(self.forward_features(x))

    def forward_quality_features(self, x: Tensor) -> Tensor:
        """(B, 3, 224, 224) -> per-patch score * weight, (B, 784): MA-AGIQA's MANIQA feature (its `key`)."""
        scores, weights = self.forward_patches(x)
        return scores * weights

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, 224, 224) -> quality (B,) = sum(score * weight) / sum(weight) over patches (official)."""
        scores, weights = self.forward_patches(x)
        return (scores * weights).sum(dim=1) / weights.sum(dim=1)


# --------------------------------------------------------------------------------------------- registry
_PRESETS: dict[str, ManiqaConfig] = {
    "base": ManiqaConfig(),
    # tests only: same 224 input / 28 x 28 patches, so the quality feature is still 784-d
    "tiny": ManiqaConfig(vit_embed_dim=32, vit_depth=4, vit_num_heads=2, vit_num_classes=10, tap_blocks=(0, 1, 2, 3),
                         embed_dim=32, num_heads=(2, 2), dim_mlp=32),
    # the demo's teacher, trained from scratch on a CPU in two minutes: 16 x 16 patches (196, so a
    # 196-d quality feature) make attention and the transposed-attention blocks 16x cheaper than 8 x 8;
    # the contrast stem is what lets it learn quality without ImageNet weights (see MSCNPatchEmbed)
    "demo": ManiqaConfig(patch_size=16, vit_embed_dim=48, vit_depth=2, vit_num_heads=3, vit_num_classes=10,
                         tap_blocks=(0, 1), embed_dim=48, depths=(1, 1), num_heads=(3, 3), dim_mlp=64, window_size=7,
                         stem="contrast"),
}


def maniqa_preset(name: str) -> ManiqaConfig:
    """The config of a preset name; a ValueError listing the valid names for anything else."""
    if not isinstance(name, str) or name not in _PRESETS:
        raise ValueError(f"unknown MANIQA preset {name!r}; valid names: {', '.join(_PRESETS)}")
    return _PRESETS[name]


def create_maniqa(name_or_config: str | ManiqaConfig = "base") -> Maniqa:
    """Build a randomly initialised MANIQA from a preset name or a config (never downloads weights)."""
    if isinstance(name_or_config, ManiqaConfig):
        return Maniqa(name_or_config)
    return Maniqa(maniqa_preset(name_or_config))


# ---------------------------------------------------------------------------------------------- loading
_DERIVED_BUFFERS = ("relative_position_index", "attn_mask")  # rebuilt from the config, may be absent from a file


def load_maniqa_weights(model: Maniqa, path: str | Path, *, allow_pickle: bool = False) -> None:
    """Load a MANIQA checkpoint (any `read_state_dict` format) into ``model``; every key must match.

    Raises ValueError naming missing keys, unexpected keys and shape mismatches. The derived buffers
    ``relative_position_index`` / ``attn_mask`` may be absent from the file (they are rebuilt from the config).
    """
    state = read_state_dict(path, allow_pickle=allow_pickle)
    problems = state_mismatch(shapes(model.state_dict()), shapes(state),
                              optional=lambda k: k.endswith(_DERIVED_BUFFERS))
    if problems:
        raise ValueError(f"{path} does not match this MANIQA config ({problems.summary(8)}); check the "
                         "MANIQA preset matches the weights")
    model.load_state_dict(state, strict=False)


# ------------------------------------------------------------------------------------ test-time crops
def crop_boxes(height: int, width: int, num_crops: int = 20, mode: Literal["random", "grid"] = "random",
               seed: int = 20, crop_size: int = 224) -> list[tuple[int, int]]:
    """(top, left) of each ``crop_size`` crop of a ``height`` x ``width`` image.

    "random" follows official predict_one_image.py: per crop ``top = randint(0, H - 224)`` then
    ``left = randint(0, W - 224)`` (upper bound exclusive) from ``np.random.RandomState(seed)``; the default
    seed=20 reproduces the official script's crops (its ``setup_seed(20)``). A side equal to crop_size gives 0
    (the official code crashes).
    "grid": rows x cols = num_crops, the factor pair whose rows / cols is closest to height / width (ties:
    fewer rows); tops evenly spaced from 0 to H - 224 inclusive (rounded), lefts likewise, row-major; a single
    row (or column) is centred. With rows, cols >= 2 the four corner crops are always included.
    """
    if height < crop_size or width < crop_size:
        raise ValueError(f"image {height}x{width} is smaller than the {crop_size} crop")
    if num_crops < 1:
        raise ValueError(f"num_crops must be >= 1, got {num_crops}")
    if mode == "random":
        rng = np.random.RandomState(seed)
        draw = lambda side: int(rng.randint(0, side - crop_size)) if side > crop_size else 0  # noqa: E731
        return [(draw(height), draw(width)) for _ in range(num_crops)]  # top drawn before left, as official
    if mode != "grid":
        raise ValueError(f"unknown crop mode {mode!r}; valid modes: random, grid")
    pairs = [(r, num_crops // r) for r in range(1, num_crops + 1) if num_crops % r == 0]
    rows, cols = min(pairs, key=lambda p: (abs(p[0] / p[1] - height / width), p[0]))
    spots = lambda n, span: [span // 2] if n == 1 else [round(i * span / (n - 1)) for i in range(n)]  # noqa: E731
    return [(top, left) for top in spots(rows, height - crop_size) for left in spots(cols, width - crop_size)]
