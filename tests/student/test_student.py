"""Student checkpoints: the config travels inside the weights; a changed config.json is refused."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from student.model import StudentIQA, StudentLoadError, create_student, list_students, student_config

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# A timm test backbone whose pretrained_cfg normalises with mean 0.5 / std 0.5, not ImageNet's.
HALF_BACKBONE = "test_resnet"


@pytest.fixture
def student_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return create_student("tiny").save_pretrained(tmp_path / "student")


def _edit(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = directory / "config.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _strip_trained_config(directory: Path) -> None:
    """Rewrite the weights as an older version did: no config in the safetensors metadata."""
    weights = directory / "model.safetensors"
    state = {k: v.clone() for k, v in load_file(str(weights)).items()}  # not views of the file
    weights.write_bytes(save(state))


def test_round_trip_keeps_weights_and_config(student_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a student saved now carries its config: no warning
        back = StudentIQA.from_pretrained(student_dir)
    original = create_student("tiny")
    assert back.config == original.config
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(0)
    reference = create_student("tiny").eval()
    torch.testing.assert_close(back(x).score, reference(x).score)


@pytest.mark.parametrize("field, value", [
    ("mean", [0.5, 0.5, 0.5]),
    ("std", [0.5, 0.5, 0.5]),
    ("input_size", [96, 96]),
    ("lower_better", True),
    ("semantic_dim", 32),
    ("backbone_kwargs", {"checkpoint_path": "/tmp/other.pth"}),
])
def test_config_changed_after_training_is_refused(student_dir: Path, field: str, value: Any) -> None:
    _edit(student_dir, lambda meta: meta["config"].__setitem__(field, value))
    with pytest.raises(StudentLoadError, match=f"{field} changed after training") as info:
        StudentIQA.from_pretrained(student_dir)
    assert "config.json" in str(info.value) and "\n" not in str(info.value)


def test_preprocess_block_changed_alone_is_refused(student_dir: Path) -> None:
    _edit(student_dir, lambda meta: meta["preprocess"].__setitem__("mean", [0.1, 0.1, 0.1]))
    with pytest.raises(StudentLoadError, match='"preprocess" block differs'):
        StudentIQA.from_pretrained(student_dir)


def test_older_checkpoint_config_that_does_not_fit_its_weights_is_one_line(student_dir: Path) -> None:
    _strip_trained_config(student_dir)
    with pytest.warns(UserWarning, match="older version"):
        StudentIQA.from_pretrained(student_dir)  # still loads
    _edit(student_dir, lambda meta: meta["config"].__setitem__("quality_dim", 24))
    with pytest.warns(UserWarning), pytest.raises(StudentLoadError, match="wrong shape") as info:
        StudentIQA.from_pretrained(student_dir)
    assert "quality_head.weight (16, " in str(info.value) and "\n" not in str(info.value)


def test_older_checkpoint_with_a_checkpoint_path_loads_its_own_weights(student_dir: Path) -> None:
    expected = {k: v.clone() for k, v in load_file(str(student_dir / "model.safetensors")).items()}
    _strip_trained_config(student_dir)
    _edit(student_dir, lambda meta: meta["config"].__setitem__(
        "backbone_kwargs", {"checkpoint_path": str(student_dir / "missing.pth"), "pretrained": True}))
    with pytest.warns(UserWarning, match="older version"):
        model = StudentIQA.from_pretrained(student_dir)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    _edit(student_dir, lambda meta: meta["config"].__setitem__("backbone", "no_such_net"))
    with pytest.warns(UserWarning), pytest.raises(StudentLoadError, match="cannot build its backbone"):
        StudentIQA.from_pretrained(student_dir)


def test_weights_that_are_not_safetensors_are_one_line(student_dir: Path) -> None:
    torch.save({"x": torch.zeros(1)}, student_dir / "model.safetensors")
    with pytest.raises(StudentLoadError, match="unreadable safetensors"):
        StudentIQA.from_pretrained(student_dir)


@pytest.mark.parametrize("name", list_students())
def test_every_variant_gets_its_backbones_normalisation_from_timm(name: str) -> None:
    assert student_config(name).mean is None and student_config(name).std is None
    config = create_student(name).config
    assert (config.mean, config.std) == IMAGENET  # what each of these timm backbones declares
    assert (config.preprocess.mean, config.preprocess.std) == IMAGENET


def test_normalisation_from_the_backbone_unless_the_config_sets_it(tmp_path: Path) -> None:
    model = create_student("tiny", backbone=HALF_BACKBONE)
    assert (model.config.mean, model.config.std) == ((0.5,) * 3, (0.5,) * 3)
    back = StudentIQA.from_pretrained(model.save_pretrained(tmp_path / "half"))
    assert back.config.preprocess == model.config.preprocess
    assert json.loads((tmp_path / "half" / "config.json").read_text())["preprocess"]["mean"] == [0.5] * 3
    partly = create_student("tiny", backbone=HALF_BACKBONE, mean=(0.4, 0.3, 0.2))
    assert (partly.config.mean, partly.config.std) == ((0.4, 0.3, 0.2), (0.5,) * 3)
    with pytest.raises(ValueError, match="come from its backbone 'mobilenetv3_small_050'"):
        _ = student_config("tiny").preprocess  # unresolved until the backbone is built


def test_saved_student_without_mean_std_loads_with_imagenet_values(tmp_path: Path) -> None:
    """A config.json from before the normalisation was resolved: trained with ImageNet values,
    whatever the backbone's timm pretrained_cfg says."""
    directory = create_student("tiny", backbone=HALF_BACKBONE, mean=IMAGENET[0], std=IMAGENET[1]
                               ).save_pretrained(tmp_path / "old")
    _strip_trained_config(directory)
    _edit(directory, lambda meta: [meta["config"].pop(k) for k in ("mean", "std")])
    with pytest.warns(UserWarning, match="older version"):
        model = StudentIQA.from_pretrained(directory)
    assert (model.config.mean, model.config.std) == IMAGENET


def test_student_sees_the_teachers_view_and_old_students_keep_theirs(tmp_path: Path) -> None:
    """A new student resizes like the teacher its labels come from (OpenCV's INTER_CUBIC, full
    decode); a config.json from before the field existed was trained on Pillow's bilinear of a
    draft-decoded image and loads that way."""
    from teacher.labeler import TeacherConfig

    model = create_student("tiny", backbone=HALF_BACKBONE)
    spec = model.config.preprocess
    assert (spec.interpolation, spec.jpeg_draft) == (TeacherConfig.__dataclass_fields__["interpolation"].default, False)
    directory = model.save_pretrained(tmp_path / "old")
    _strip_trained_config(directory)
    _edit(directory, lambda meta: [meta["config"].pop(k) for k in ("interpolation", "jpeg_draft")])
    with pytest.warns(UserWarning, match="older version"):
        old = StudentIQA.from_pretrained(directory)
    assert (old.config.preprocess.interpolation, old.config.preprocess.jpeg_draft) == ("bilinear", True)
    with pytest.raises(ValueError, match="unknown student interpolation 'lanczos'"):
        create_student("tiny", backbone=HALF_BACKBONE, interpolation="lanczos")


def test_contrast_stem_is_the_luminance_mscn_with_mass_renormalised_borders() -> None:
    """MSCN of the BT.601 luminance on 0-255, 7 x 7 Gaussian (sigma 7/6), computed independently
    with scipy: replicated borders inside, and zero padding divided by the window's mass (what the
    stem does, for the device) everywhere."""
    from scipy import ndimage

    from student.model import LuminanceMSCNStem

    mean, std = IMAGENET
    stem = LuminanceMSCNStem(mean, std, (40, 48))
    rgb = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    x = (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = stem(x)
    assert out.shape == (2, 4, 40, 48) and torch.equal(out[:, 1:], x)
    grey = np.tensordot(rgb.double().numpy() * 255, [0.299, 0.587, 0.114], axes=([1], [0]))  # (B, H, W)
    taps = np.exp(-np.arange(-3.0, 4.0) ** 2 / (2 * (7 / 6) ** 2))
    window = (np.outer(taps, taps) / taps.sum() ** 2)[None]

    def mscn(mode: str) -> np.ndarray:
        if mode == "nearest":
            mu = ndimage.correlate(grey, window, mode="nearest")
            second = ndimage.correlate(grey**2, window, mode="nearest")
        else:  # zero padding, divided by the window's mass inside the image
            mass = ndimage.correlate(np.ones_like(grey), window, mode="constant")
            mu = ndimage.correlate(grey, window, mode="constant") / mass
            second = ndimage.correlate(grey**2, window, mode="constant") / mass
        return (grey - mu) / (np.sqrt(np.maximum(second - mu**2, 0)) + 1)

    got = out[:, 0].double().numpy()
    # float32 moments of 0-255 values: E[I^2] - mu^2 cancels 1e4-sized terms (~1e-3 in flat areas)
    np.testing.assert_allclose(got, mscn("constant"), atol=2e-2)
    np.testing.assert_allclose(got[:, 3:-3, 3:-3], mscn("nearest")[:, 3:-3, 3:-3], atol=2e-2)  # BRISQUE inside


def test_contrast_stem_student_round_trips_and_older_configs_load_without_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_student("tiny", contrast_stem=True).eval()
    assert model.backbone.conv_stem.in_channels == 4 and student_config("mnv3s").contrast_stem
    x = torch.randn(2, 3, 64, 64)
    loaded = StudentIQA.from_pretrained(model.save_pretrained(tmp_path / "with_stem")).eval()
    assert loaded.config.contrast_stem and torch.equal(loaded(x).score, model(x).score)
    # A student saved before the field existed (in config.json and in the weights' metadata) was
    # built without the stem, and loads so.
    plain = create_student("tiny").save_pretrained(tmp_path / "plain")
    meta = json.loads((plain / "config.json").read_text())
    assert meta["config"].pop("contrast_stem") is False
    (plain / "config.json").write_text(json.dumps(meta))
    with safe_open(str(plain / "model.safetensors"), framework="pt") as f:
        trained_with = json.loads(f.metadata()["agiqa-edge/student-config"])
    del trained_with["contrast_stem"]
    (plain / "model.safetensors").write_bytes(save(load_file(str(plain / "model.safetensors")),
                                                   metadata={"agiqa-edge/student-config": json.dumps(trained_with)}))
    assert StudentIQA.from_pretrained(plain).stem is None


@pytest.mark.parametrize("size", [(40, 48), (38, 45)])
def test_contrast_stem_polyphase_window_equals_the_7x7_window(size: tuple[int, int]) -> None:
    """The stem's 7 x 7 window, run as one 3 x 3 convolution over 4 x 4 pixel blocks (and its
    border mass likewise), computes what the single 7 x 7 window over the image did (the form
    trained checkpoints were fitted with) to float32 rounding, in eval and in training mode, also
    where the size is no multiple of 4 (zero padded, masked, cropped)."""
    import torch.nn.functional as F

    from student.model import LuminanceMSCNStem

    mean, std = IMAGENET
    stem = LuminanceMSCNStem(mean, std, size)
    assert stem.state_dict() == {}  # only non-persistent buffers: checkpoints load unchanged
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1)) * 1.5
    taps = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / (2 * (7 / 6) ** 2))
    window = (torch.outer(taps, taps) / taps.sum() ** 2).expand(2, 1, 7, 7)
    luma = torch.tensor([0.299, 0.587, 0.114])
    rgb255 = (x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)) * 255
    grey = (rgb255 * luma.view(1, 3, 1, 1)).sum(1, keepdim=True)
    mass = F.conv2d(torch.ones(1, 1, *size), window[:1], padding=3)
    moments = F.conv2d(torch.cat([grey, grey * grey], 1), window, padding=3, groups=2) / mass
    mu, second = moments[:, :1], moments[:, 1:]
    expected = (grey - mu) / (torch.relu(second - mu * mu).sqrt() + 1)
    for mode in (False, True):
        out = stem.train(mode)(x)
        assert out.shape == (2, 4, *size) and torch.equal(out[:, 1:], x)
        torch.testing.assert_close(out[:, :1], expected, rtol=0, atol=1e-4)


def test_student_and_teacher_stems_share_their_mscn_window() -> None:
    """The student's luminance stem and the demo teacher's MANIQA patch embedding normalise with
    the same BRISQUE window: its 1-d factors' product is the teacher's 7 x 7 window bit for bit, and
    on a grey image (luminance = each channel) both give the same MSCN away from the borders,
    where only their padding differs (replicate in the teacher, renormalised zeros in the student)."""
    from student.model import LuminanceMSCNStem
    from teacher.maniqa import MSCNPatchEmbed

    mean, std = IMAGENET
    student, teacher = LuminanceMSCNStem(mean, std, (40, 48)).eval(), MSCNPatchEmbed(embed_dim=8, patch_size=16)
    assert torch.equal(torch.outer(student.taps, student.taps), teacher.window[0, 0])
    grey = torch.rand(1, 1, 40, 48, generator=torch.Generator().manual_seed(2)).expand(1, 3, 40, 48)
    x = (grey - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = student(x)[:, :1, 3:-3, 3:-3]
        theirs = teacher.mscn(grey * 2 - 1)[:, :, 3:-3, 3:-3]
    for channel in range(3):
        torch.testing.assert_close(ours, theirs[:, channel:channel + 1], rtol=1e-4, atol=1e-3)


def test_the_student_and_teacher_contrast_stems_agree_where_their_windows_lie_inside():
    """teacher.maniqa.MSCNPatchEmbed (per channel, replicated borders) and the student's
    LuminanceMSCNStem (BT.601 luminance, zero padding over the window's mass) compute the same
    MSCN on a grey image wherever the 7 x 7 window lies inside it."""
    from student.model import LuminanceMSCNStem
    from teacher.maniqa import MSCNPatchEmbed

    grey = torch.rand(2, 1, 40, 48, generator=torch.Generator().manual_seed(1)).expand(2, 3, 40, 48)
    mean, std = IMAGENET
    student_in = (grey - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    student = LuminanceMSCNStem(mean, std, (40, 48))(student_in)[:, 0]
    teacher = MSCNPatchEmbed(embed_dim=8, patch_size=8).mscn(grey * 2 - 1)  # the teacher's [-1, 1] view
    assert teacher.shape == (2, 3, 40, 48)
    inside = (slice(None), slice(3, -3), slice(3, -3))
    # float32 moments of 0-255 values cancel ~1e4-sized terms: ~1e-3 apart in flat areas
    torch.testing.assert_close(student[inside], teacher[:, 0][inside], atol=2e-2, rtol=0)
    assert not torch.allclose(student[:, :3], teacher[:, 0, :3], atol=2e-2)  # the borders differ


def test_training_on_stem_outputs_equals_training_on_images() -> None:
    """distill.train runs the weightless contrast stem once per image held in RAM and flips its
    output (``forward(stem(x), stem_applied=True)``): the same outputs as the stem run at every
    step on the flipped image, to float32 rounding (the window and border mass are symmetric)."""
    torch.manual_seed(0)
    model = create_student("tiny", contrast_stem=True).train()
    x = torch.randn(3, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        stem_out = model.stem(x)
        assert stem_out.shape == (3, model.stem.out_channels, 64, 64)
        torch.testing.assert_close(model.stem(x.flip(-1)), stem_out.flip(-1), rtol=1e-5, atol=1e-5)
        model.eval()
        torch.testing.assert_close(model(stem_out, stem_applied=True).score, model(x).score, rtol=1e-5, atol=1e-5)
    assert create_student("tiny").forward_features(x, stem_applied=True).shape[0] == 3  # no stem: a no-op flag
