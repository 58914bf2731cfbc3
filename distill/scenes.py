"""Procedural scenes with the statistics of natural images, for a demo that covers the world.

The demo's MOS comes from the degradation, not from the content, so it applies to any pristine
source image. Three photographs teach a quality model what blur, noise and JPEG look like on
three photographs only; these scenes add content of every kind while keeping what quality
models rely on in real photos: a 1/f amplitude spectrum, sharp occlusion edges at all scales,
smooth shading, flat regions, fine texture and text. Every generator maps ``(rng, (H, W))`` to
an ``(H, W, 3) uint8`` image; :func:`make_scene` picks and composes them. Deterministic for a seed.

- ``pink_noise``: fractal texture, amplitude ~ 1/f^beta per channel with correlated colour;
- ``dead_leaves``: the occlusion model of natural images (discs and boxes, radii ~ r^-3), flat
  or textured leaves, optionally pasted photo patches;
- ``shapes``: gradients (linear, radial) with polygons, ellipses and strokes;
- ``text``: lines of random characters on paper-like or coloured backgrounds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["SCENE_KINDS", "make_scene"]

Size = tuple[int, int]  # (H, W)


def _palette(rng: np.random.Generator, n: int, photos: list[np.ndarray]) -> np.ndarray:
    """``(n, 3)`` float colours: sampled from the photographs' pixels when given (natural hues),
    else random in a perceptually even-ish way."""
    if photos and rng.random() < 0.6:
        photo = photos[int(rng.integers(len(photos)))]
        ys, xs = rng.integers(0, photo.shape[0], n), rng.integers(0, photo.shape[1], n)
        return photo[ys, xs].astype(np.float32)
    hue_base = rng.uniform(0, 1)
    hues = (hue_base + rng.normal(0, 0.15, n)) % 1.0
    sat, val = rng.uniform(0.1, 0.9, n), rng.uniform(0.15, 1.0, n)
    k = (np.stack([hues * 6 + o for o in (5.0, 3.0, 1.0)], 1)) % 6
    rgb = val[:, None] - val[:, None] * sat[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)
    return (rgb * 255).astype(np.float32)


def pink_noise(rng: np.random.Generator, size: Size, photos: list[np.ndarray] | None = None) -> np.ndarray:
    h, w = size
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy ** 2 + fx ** 2)
    f[0, 0] = 1.0
    beta = rng.uniform(1.6, 2.4)  # power ~ 1/f^beta; natural images: about 2
    amplitude = f ** (-beta / 2)
    amplitude[0, 0] = 0.0
    channels = []
    for _ in range(3):
        spectrum = amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape))
        channels.append(np.fft.irfft2(spectrum, s=(h, w)))
    field = np.stack(channels, -1)
    field /= field.std() + 1e-8
    mix = rng.normal(0, 1, (3, 3)) * 0.35 + np.eye(3) * rng.uniform(0.2, 1.0)
    mix = np.full((3, 3), rng.uniform(0.5, 1.0)) + mix  # mostly luminance, some colour
    out = field @ mix.T
    out = (out - out.mean((0, 1))) / (out.std() + 1e-8)
    base = _palette(rng, 1, photos or [])[0]
    contrast = rng.uniform(25, 70)
    return np.clip(base + out * contrast, 0, 255).astype(np.uint8)


def dead_leaves(rng: np.random.Generator, size: Size, photos: list[np.ndarray] | None = None) -> np.ndarray:
    h, w = size
    photos = photos or []
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = _palette(rng, 1, photos)[0]
    rmin, rmax = max(1.5, 0.006 * max(h, w)), 0.3 * max(h, w)
    # radii ~ r^-3 (scale invariance), by inverse transform sampling; enough leaves to cover the
    # canvas about three times over, so hardly any background shows, as in the model
    u = rng.random(4000)
    radii = (rmin ** -2 - u * (rmin ** -2 - rmax ** -2)) ** -0.5
    # (at most the 4000 drawn: a canvas of 800 x 800 may need more and is covered a little less)
    n = min(int(np.searchsorted(np.cumsum(np.pi * radii ** 2), 3.0 * h * w)) + 1, len(radii))
    radii = np.sort(radii[:n])[::-1] if rng.random() < 0.5 else radii[:n]  # big-first: small ones on top
    colours = _palette(rng, n, photos)
    texture = pink_noise(rng, size).astype(np.float32) - 128.0 if rng.random() < 0.5 else None
    for i in range(n):
        r = radii[i]
        cy, cx = rng.uniform(-r, h + r), rng.uniform(-r, w + r)
        y0, y1 = int(max(0, cy - r)), int(min(h, cy + r + 1))
        x0, x1 = int(max(0, cx - r)), int(min(w, cx + r + 1))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        if rng.random() < 0.7:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:  # a box at a random angle
            angle = rng.uniform(0, np.pi)
            c, s = np.cos(angle), np.sin(angle)
            u_, v_ = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
            mask = (np.abs(u_) <= r) & (np.abs(v_) <= r * rng.uniform(0.2, 1.0))
        fill = np.broadcast_to(colours[i], (y1 - y0, x1 - x0, 3)).copy()
        if texture is not None and rng.random() < 0.5:
            fill += texture[y0:y1, x0:x1] * rng.uniform(0.1, 0.5)
        if photos and rng.random() < 0.08:  # a photo patch as the leaf's surface
            photo = photos[int(rng.integers(len(photos)))]
            ph, pw = photo.shape[:2]
            if ph > y1 - y0 and pw > x1 - x0:
                ty, tx = int(rng.integers(0, ph - (y1 - y0))), int(rng.integers(0, pw - (x1 - x0)))
                fill = photo[ty:ty + y1 - y0, tx:tx + x1 - x0].astype(np.float32)
        canvas[y0:y1, x0:x1][mask] = fill[mask]
    return np.clip(canvas, 0, 255).astype(np.uint8)


def shapes(rng: np.random.Generator, size: Size, photos: list[np.ndarray] | None = None) -> np.ndarray:
    h, w = size
    colours = _palette(rng, 40, photos or [])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = ((xx * np.cos(angle) + yy * np.sin(angle)) - 0) / (abs(w * np.cos(angle)) + abs(h * np.sin(angle)) + 1)
    else:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        t = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / np.hypot(h, w)
    t = (t - t.min()) / (np.ptp(t) + 1e-8)
    background = colours[0] * (1 - t[..., None]) + colours[1] * t[..., None]
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for i in range(int(rng.integers(8, 40))):
        colour = tuple(int(c) for c in colours[2 + i % 38])
        kind = rng.random()
        pts = [(float(rng.uniform(-0.1, 1.1) * w), float(rng.uniform(-0.1, 1.1) * h))
               for _ in range(int(rng.integers(3, 7)))]
        if kind < 0.4:
            draw.polygon(pts, fill=colour)
        elif kind < 0.75:
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            rx, ry = rng.uniform(0.02, 0.3) * w, rng.uniform(0.02, 0.3) * h
            draw.ellipse([x0 - rx, y0 - ry, x0 + rx, y0 + ry], fill=colour,
                         outline=colour if rng.random() < 0.5 else None)
        else:
            draw.line(pts, fill=colour, width=int(rng.integers(1, max(2, w // 60))))
    out = np.asarray(image, np.float32)
    if rng.random() < 0.5:  # soft shading, as light falls on a scene
        shade = pink_noise(rng, size).astype(np.float32).mean(-1, keepdims=True) / 128.0
        out = out * (0.6 + 0.4 * shade)
    return np.clip(out, 0, 255).astype(np.uint8)


_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,;:!?-()"


def text(rng: np.random.Generator, size: Size, photos: list[np.ndarray] | None = None) -> np.ndarray:
    h, w = size
    background = pink_noise(rng, size) if rng.random() < 0.4 else None
    colours = _palette(rng, 2, photos or [])
    paper, ink = (colours[0], colours[1]) if rng.random() < 0.5 else (np.array([240.0, 236, 228]),
                                                                      np.array([20.0, 20, 25]))
    if background is not None:
        image = Image.fromarray(background)
    else:
        image = Image.new("RGB", (w, h), tuple(int(c) for c in paper))
    draw = ImageDraw.Draw(image)
    y = float(rng.uniform(0, 0.05) * h)
    while y < h:
        px = int(rng.integers(max(8, h // 40), max(12, h // 8)))
        font = ImageFont.load_default(size=px)
        line = "".join(rng.choice(list(_CHARS), int(rng.integers(5, 60))))
        draw.text((float(rng.uniform(0, 0.1) * w), y), line, font=font, fill=tuple(int(c) for c in ink))
        y += px * rng.uniform(1.1, 2.2)
    return np.asarray(image)


SCENE_KINDS: dict[str, Callable[..., np.ndarray]] = {
    "pinknoise": pink_noise, "deadleaves": dead_leaves, "shapes": shapes, "text": text}
_WEIGHTS = {"pinknoise": 0.15, "deadleaves": 0.3, "shapes": 0.25, "text": 0.1, "composite": 0.2}


def make_scene(rng: np.random.Generator, size: Size, photos: list[np.ndarray] | None = None) -> tuple[str, np.ndarray]:
    """A random procedural scene ``(kind, (H, W, 3) uint8)``; ``photos`` lend colours and patches."""
    names = list(_WEIGHTS)
    kind = names[int(rng.choice(len(names), p=np.array(list(_WEIGHTS.values())) / sum(_WEIGHTS.values())))]
    if kind != "composite":
        return kind, SCENE_KINDS[kind](rng, size, photos)
    # leaves over a textured ground, with a band of text: the layered content of real scenes
    ground = pink_noise(rng, size, photos).astype(np.float32)
    leaves = dead_leaves(rng, size, photos).astype(np.float32)
    yy = np.linspace(0, 1, size[0])[:, None, None]
    blend = np.clip((yy - rng.uniform(0.2, 0.6)) * rng.uniform(4, 20), 0, 1)
    out = leaves * (1 - blend) + ground * blend
    if rng.random() < 0.5:
        band = text(rng, (size[0] // 4, size[1]), photos).astype(np.float32)
        top = int(rng.integers(0, size[0] - band.shape[0]))
        out[top:top + band.shape[0]] = band
    return kind, np.clip(out, 0, 255).astype(np.uint8)
