"""Procedural demo scenes: deterministic, every kind made, natural-image statistics, and in the demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill.demo import make_demo_images
from distill.scenes import SCENE_KINDS, make_scene


@pytest.mark.parametrize("kind", sorted(SCENE_KINDS))
def test_each_scene_kind_is_deterministic_and_an_rgb_image(kind: str) -> None:
    a = SCENE_KINDS[kind](np.random.default_rng(3), (64, 80))
    b = SCENE_KINDS[kind](np.random.default_rng(3), (64, 80))
    assert a.shape == (64, 80, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert a.std() > 5  # content, not a flat colour
    assert not np.array_equal(a, SCENE_KINDS[kind](np.random.default_rng(4), (64, 80)))


def test_pink_noise_has_a_natural_spectrum() -> None:
    """Power falls with frequency about as 1/f^2 (the slope of natural images), not flat like white noise."""
    image = SCENE_KINDS["pinknoise"](np.random.default_rng(0), (256, 256)).astype(np.float64).mean(-1)
    power = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2
    yy, xx = np.indices(power.shape) - 128
    radius = np.hypot(yy, xx).astype(int)
    radial = np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())
    f = np.arange(4, 100)
    slope = np.polyfit(np.log(f), np.log(radial[4:100]), 1)[0]
    assert -3.3 < slope < -1.3, slope


def test_make_scene_draws_every_kind() -> None:
    rng = np.random.default_rng(0)
    kinds = {make_scene(rng, (48, 64))[0] for _ in range(60)}
    assert kinds == {*SCENE_KINDS, "composite"}


def test_demo_images_are_mostly_scenes_and_reproducible(tmp_path: Path) -> None:
    first = make_demo_images(tmp_path / "a", count=24, seed=5, size=(64, 80))
    second = make_demo_images(tmp_path / "b", count=24, seed=5, size=(64, 80))
    entries = json.loads((first / "demo.json").read_text())["images"]
    scenes = [e for e in entries if e["photo"].startswith("scene")]
    assert 0.5 <= len(scenes) / len(entries) <= 0.95 and len(entries) - len(scenes) >= 2
    for e in entries:
        assert (first / e["file"]).read_bytes() == (second / e["file"]).read_bytes()
    photos_only = make_demo_images(tmp_path / "c", count=6, seed=5, size=(64, 80), scene_share=0.0)
    assert not any(e["photo"].startswith("scene")
                   for e in json.loads((photos_only / "demo.json").read_text())["images"])
