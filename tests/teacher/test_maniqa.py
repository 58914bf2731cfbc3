"""teacher/maniqa.py against an independent, compact reference MANIQA written in the official code's style
(IIGROUP/MANIQA models/maniqa.py + models/swin.py: forward hooks on every ViT Block, official parameter names)."""

import argparse

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import Block
from torch import nn

from teacher.maniqa import (
    Maniqa,
    ManiqaConfig,
    create_maniqa,
    crop_boxes,
    load_maniqa_weights,
    normalize,
)
from teacher.state_dict import read_state_dict

ATOL = 1e-5  # float32 parity tolerance between the reference and teacher/maniqa.py


# ------------------------------------------------------------------------------ reference MANIQA
class RefTAB(nn.Module):
    def __init__(self, dim, drop=0.1):
        super().__init__()
        self.c_q, self.c_k, self.c_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_fact = dim ** -0.5
        self.softmax = nn.Softmax(dim=-1)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x):
        B, C, N = x.shape
        attn = self.softmax(self.c_q(x) @ self.c_k(x).transpose(-2, -1) * self.norm_fact)
        return self.proj_drop((attn @ self.c_v(x)).transpose(1, 2).reshape(B, C, N)) + x


class RefMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def window_partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


def window_reverse(windows, ws, H, W):
    B = int(windows.shape[0] / (H * W / ws / ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


class RefWindowAttention(nn.Module):
    def __init__(self, dim, ws, heads):
        super().__init__()
        self.ws, self.num_heads, self.scale = ws, heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads) * 0.02)
        coords = torch.flatten(torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing="ij")), 1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += ws - 1
        rel[:, :, 1] += ws - 1
        rel[:, :, 0] *= 2 * ws - 1
        self.register_buffer("relative_position_index", rel.sum(-1))
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(B_, N, C))


class RefSwinBlock(nn.Module):
    def __init__(self, dim, res, heads, ws, shift, dim_mlp):
        super().__init__()
        self.res, self.ws, self.shift = res, ws, shift
        self.norm1, self.attn = nn.LayerNorm(dim), RefWindowAttention(dim, ws, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), RefMlp(dim, dim_mlp)
        attn_mask = None
        if shift > 0:
            img_mask = torch.zeros((1, res, res, 1))
            slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
            cnt = 0
            for h in slices:
                for w in slices:
                    img_mask[:, h, w, :] = cnt
                    cnt += 1
            mw = window_partition(img_mask, ws).view(-1, ws * ws)
            attn_mask = mw.unsqueeze(1) - mw.unsqueeze(2)
            attn_mask = attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)
        self.register_buffer("attn_mask", attn_mask)

    def forward(self, x):
        H = W = self.res
        B, L, C = x.shape
        shortcut, x = x, self.norm1(x).view(B, H, W, C)
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        xw = window_partition(x, self.ws).view(-1, self.ws * self.ws, C)
        x = window_reverse(self.attn(xw, mask=self.attn_mask).view(-1, self.ws, self.ws, C), self.ws, H, W)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x.view(B, H * W, C)
        return x + self.mlp(self.norm2(x))


class RefBasicLayer(nn.Module):
    def __init__(self, dim, res, depth, heads, ws, dim_mlp):
        super().__init__()
        self.res = res
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)
        self.blocks = nn.ModuleList(
            RefSwinBlock(dim, res, heads, ws, 0 if i % 2 == 0 else ws // 2, dim_mlp) for i in range(depth))

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        B, L, C = x.shape
        x = F.relu(self.conv(x.permute(0, 2, 1).reshape(B, C, self.res, self.res)))
        return x.reshape(B, C, L).permute(0, 2, 1)


class RefSwinTransformer(nn.Module):
    def __init__(self, res, depths, num_heads, embed_dim, ws, dim_mlp, scale):
        super().__init__()
        self.scale, self.res = scale, res
        self.dropout = nn.Dropout(p=0.1)
        self.downsample = nn.Conv2d(embed_dim, embed_dim, kernel_size=3, stride=2, padding=1)
        self.layers = nn.ModuleList(
            RefBasicLayer(embed_dim, res, d, h, ws, dim_mlp) for d, h in zip(depths, num_heads))

    def forward(self, x):
        B, C, H, W = x.shape
        x = self.dropout(x).reshape(B, C, H * W).permute(0, 2, 1)
        for layer in self.layers:
            x = self.scale * layer(x) + x
        return x.permute(0, 2, 1).reshape(B, C, H, W)


class SaveOutput:
    def __init__(self):
        self.outputs = []

    def __call__(self, module, module_in, module_out):
        self.outputs.append(module_out)


class RefMANIQA(nn.Module):
    """Official structure; `vit_kwargs` shrink vit_base_patch8_224, `taps` replace the hard-coded 6..9."""

    def __init__(self, embed_dim, vit_kwargs, taps, depths, num_heads, window_size, dim_mlp, num_tab, scale):
        super().__init__()
        self.taps, self.input_size = taps, 28
        self.vit = timm.create_model("vit_base_patch8_224", pretrained=False, **vit_kwargs)
        self.save_output = SaveOutput()
        for layer in self.vit.modules():
            if isinstance(layer, Block):
                layer.register_forward_hook(self.save_output)
        self.tablock1 = nn.ModuleList(RefTAB(784) for _ in range(num_tab))
        self.conv1 = nn.Conv2d(vit_kwargs["embed_dim"] * len(taps), embed_dim, 1, 1, 0)
        args = (28, depths, num_heads)
        self.swintransformer1 = RefSwinTransformer(*args, embed_dim, window_size, dim_mlp, scale)
        self.tablock2 = nn.ModuleList(RefTAB(784) for _ in range(num_tab))
        self.conv2 = nn.Conv2d(embed_dim, embed_dim // 2, 1, 1, 0)
        self.swintransformer2 = RefSwinTransformer(*args, embed_dim // 2, window_size, dim_mlp, scale)
        d = embed_dim // 2
        self.fc_score = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(0.1), nn.Linear(d, 1), nn.ReLU())
        self.fc_weight = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(0.1), nn.Linear(d, 1), nn.Sigmoid())

    def patches(self, x):
        self.vit(x)
        x = torch.cat([self.save_output.outputs[i][:, 1:] for i in self.taps], dim=2)
        self.save_output.outputs.clear()
        B, N, C = x.shape
        x = x.permute(0, 2, 1)
        for tab in self.tablock1:
            x = tab(x)
        x = self.swintransformer1(self.conv1(x.reshape(B, C, 28, 28)))
        x = x.reshape(B, x.shape[1], N)
        for tab in self.tablock2:
            x = tab(x)
        x = self.swintransformer2(self.conv2(x.reshape(B, -1, 28, 28)))
        x = x.reshape(B, x.shape[1], N).permute(0, 2, 1)
        return self.fc_score(x), self.fc_weight(x)  # (B, N, 1) each

    def forward(self, x):
        f, w = self.patches(x)
        return torch.stack([torch.sum(f[i] * w[i]) / torch.sum(w[i]) for i in range(x.shape[0])])


def ref_from(cfg: ManiqaConfig) -> RefMANIQA:
    vit = dict(embed_dim=cfg.vit_embed_dim, depth=cfg.vit_depth, num_heads=cfg.vit_num_heads,
               num_classes=cfg.vit_num_classes)
    return RefMANIQA(cfg.embed_dim, vit, list(cfg.tap_blocks), list(cfg.depths), list(cfg.num_heads),
                     cfg.window_size, cfg.dim_mlp, cfg.num_tab, cfg.scale)


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ref():
    torch.manual_seed(0)
    m = ref_from(create_maniqa("tiny").config)
    with torch.no_grad():  # move every parameter off its default init (LayerNorm 1/0, zero biases)
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return normalize(torch.rand(2, 3, 224, 224))


def check_parity(model: Maniqa, ref: RefMANIQA, images: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        f, w = ref.patches(images)  # (B, 784, 1) each
        scores, weights = model.forward_patches(images)
        torch.testing.assert_close(scores, f.squeeze(-1), atol=ATOL, rtol=0)
        torch.testing.assert_close(weights, w.squeeze(-1), atol=ATOL, rtol=0)
        official = torch.stack([torch.sum(f[i] * w[i]) / torch.sum(w[i]) for i in range(len(images))])
        torch.testing.assert_close(model(images), official, atol=ATOL, rtol=0)
        torch.testing.assert_close(model.forward_quality_features(images), (f * w).squeeze(-1), atol=ATOL, rtol=0)


def check_same_weights(model: Maniqa, ref: RefMANIQA) -> None:
    """Loaders are checked by weights (cheap); forward parity given equal weights is checked once above."""
    own, theirs = model.state_dict(), ref.state_dict()
    assert set(own) == set(theirs)
    for k, v in theirs.items():
        assert torch.equal(own[k], v), k


# ---------------------------------------------------------------------------------------- tests
def test_reference_safetensors_parity(ref, images, tmp_path):
    path = tmp_path / "maniqa.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = create_maniqa("tiny")
    load_maniqa_weights(model, path)  # raises on any missing / unexpected key
    assert set(read_state_dict(path)) == set(model.state_dict())
    check_parity(model, ref, images)


def test_pyiqa_wrapped_state_dict(ref, tmp_path):
    path = tmp_path / "pyiqa.pth"
    torch.save({"params": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    model = create_maniqa("tiny")
    load_maniqa_weights(model, path)
    check_same_weights(model, ref)


class _PyiqaMetric(nn.Module):
    """The layout of pyiqa's ``InferenceModel`` (what ``create_metric("maniqa")`` returns)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.dummy_param = nn.Parameter(torch.empty(0))  # pyiqa's device marker


@pytest.mark.parametrize("prefix", ["", "module."])
def test_pyiqa_metric_state_dict_loads(ref, tmp_path, prefix):
    state = _PyiqaMetric(ref).state_dict()
    assert "dummy_param" in state and all(k.startswith("net.") for k in state if k != "dummy_param")
    path = tmp_path / "pyiqa_metric.pth"
    torch.save({f"{prefix}{k}": v for k, v in state.items()}, path)
    model = create_maniqa("tiny")
    load_maniqa_weights(model, path)  # strict: a leftover `net.` or `dummy_param` would be reported
    check_same_weights(model, ref)


def test_derived_buffers_may_be_absent(ref, tmp_path):
    path = tmp_path / "no_buffers.pt"
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith(("attn_mask", "relative_position_index"))}
    torch.save(state, path)
    model = create_maniqa("tiny")
    load_maniqa_weights(model, path)
    check_same_weights(model, ref)


def test_pickled_checkpoint_needs_allow_pickle(ref, tmp_path):
    path = tmp_path / "with_options.pt"
    # Training options beside the weights: weights_only=True refuses the Namespace.
    torch.save({"params": ref.state_dict(), "opt": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError, match=r"with_options\.pt.*allow-pickle") as err:
        read_state_dict(path)
    assert "\n" not in str(err.value)
    model = create_maniqa("tiny")
    with pytest.warns(UserWarning, match="arbitrary code"):
        load_maniqa_weights(model, path, allow_pickle=True)
    check_same_weights(model, ref)


def test_pickled_whole_model_is_refused(ref, tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(ref, path)  # torch.save(net): the weights come only with the code that pickled them
    with pytest.warns(UserWarning, match="arbitrary code"), \
            pytest.raises(ValueError, match=r"whole_model\.pt: holds a RefMANIQA, not a state dict; save"):
        read_state_dict(path, allow_pickle=True)


def test_mismatched_keys_are_reported(ref, tmp_path):
    state = dict(ref.state_dict())
    state.pop("conv1.weight")
    state["fc39_784.0.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ValueError, match=r"missing \[conv1.weight\] \(1\); unexpected \[fc39_784"):
        load_maniqa_weights(create_maniqa("tiny"), path)
    with pytest.raises(ValueError, match="wrong shape"):
        load_maniqa_weights(create_maniqa(ManiqaConfig(**{**create_maniqa("tiny").config.to_dict(),
                                                          "dim_mlp": 16})), tmp_path / "bad.safetensors")


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="unknown MANIQA preset 'huge'; valid names: base, tiny"):
        create_maniqa("huge")


def test_config_round_trip_and_base_dims():
    cfg = create_maniqa("tiny").config
    assert ManiqaConfig.from_dict(cfg.to_dict()) == cfg
    base = ManiqaConfig()
    assert (base.vit_embed_dim, base.vit_depth, base.tap_blocks, base.num_patches) == (768, 12, (6, 7, 8, 9), 784)
    assert (base.embed_dim, base.depths, base.num_heads, base.window_size, base.dim_mlp, base.scale) == (
        768, (2, 2), (4, 4), 4, 768, 0.8)
    with pytest.raises(ValueError, match="tap_blocks"):
        ManiqaConfig(vit_depth=8)


def test_output_shapes_and_input_check(images):
    model = create_maniqa("tiny").eval()
    with torch.no_grad():
        features = model.forward_features(images)
        scores, weights = model.forward_head(features)
        score = model(images)
    assert features.shape == (2, 784, 16)
    assert scores.shape == weights.shape == (2, 784) and score.shape == (2,)
    assert (scores >= 0).all() and ((weights > 0) & (weights < 1)).all()
    with pytest.raises(ValueError, match=r"\(B, 3, 224, 224\)"):
        model(torch.zeros(1, 3, 256, 256))


def test_grid_crops_deterministic_and_cover_corners():
    boxes = crop_boxes(300, 400, 20, "grid")
    assert boxes == crop_boxes(300, 400, 20, "grid", seed=5)
    assert len(boxes) == 20 and len(set(boxes)) == 20
    assert {(0, 0), (0, 176), (76, 0), (76, 176)} <= set(boxes)
    assert all(0 <= top <= 76 and 0 <= left <= 176 for top, left in boxes)
    assert crop_boxes(300, 300, 1, "grid") == [(38, 38)]
    with pytest.raises(ValueError, match="smaller"):
        crop_boxes(200, 400, 4, "grid")
    with pytest.raises(ValueError, match="valid modes"):
        crop_boxes(300, 400, 4, "center")


def test_random_crops_follow_official_seeding():
    rng = np.random.RandomState(20)  # official predict_one_image.py: setup_seed(20), then top/left per crop
    expected = [(int(rng.randint(0, 300 - 224)), int(rng.randint(0, 400 - 224))) for _ in range(20)]
    assert crop_boxes(300, 400, 20, "random", seed=20) == expected
    assert crop_boxes(300, 400, 20, "random") == expected  # the official seed is the default
    assert crop_boxes(300, 400, 20, "random", seed=0) != expected
    assert crop_boxes(224, 224, 3, "random") == [(0, 0)] * 3


# ------------------------------------------------------------------------------ the contrast stem (demo)
def test_contrast_stem_mscn_matches_an_independent_computation():
    """BRISQUE's MSCN: (I - mu) / (sigma + 1) on 0-255 grey levels, mu and sigma from a 7 x 7 Gaussian
    (sigma 7/6) with replicated borders; computed here with scipy.ndimage instead of a conv."""
    from scipy import ndimage

    from teacher.maniqa import MSCNPatchEmbed

    stem = MSCNPatchEmbed(embed_dim=8, patch_size=16)
    x = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    taps = np.exp(-np.arange(-3.0, 4.0) ** 2 / (2 * (7 / 6) ** 2))
    window = np.outer(taps, taps) / taps.sum() ** 2
    grey = (x.double().numpy() + 1) * 127.5
    mu = ndimage.correlate(grey, window[None, None], mode="nearest")
    sigma = np.sqrt(np.maximum(ndimage.correlate(grey**2, window[None, None], mode="nearest") - mu**2, 0))
    expected = (grey - mu) / (sigma + 1)
    got = stem.mscn(x).double().numpy()
    # float32 moments of 0-255 values: E[I^2] - mu^2 cancels ~1e4-sized terms, so flat areas carry ~1e-3 error
    np.testing.assert_allclose(got, expected, atol=2e-2, rtol=0)
    assert np.abs(got - expected).mean() < 1e-3
    assert stem(x).shape == (2, 8, 48 // 16, 64 // 16)


def test_demo_preset_uses_the_contrast_stem_and_config_round_trips():
    model = create_maniqa("demo").eval()
    assert model.config.stem == "contrast" and ManiqaConfig.from_dict(model.config.to_dict()) == model.config
    assert "vit.patch_embed.proj.convs.0.weight" in model.state_dict()
    with torch.no_grad():
        assert model.forward_quality_features(torch.zeros(2, 3, 224, 224)).shape == (2, 196)
    assert ManiqaConfig.from_dict({k: v for k, v in ManiqaConfig().to_dict().items()
                                   if k not in ("stem", "stem_width")}).stem == "patch"  # older teacher.json
    with pytest.raises(ValueError, match="unknown MANIQA stem 'cnn'; valid: patch, contrast"):
        ManiqaConfig(stem="cnn")
