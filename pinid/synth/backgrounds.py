"""Procedural surfaces that pins are photographed on (no downloaded images).

Each generator takes a numpy ``Generator`` and a size and returns float32 RGB
in [0, 1]. They aim at the few things collectors actually shoot on: fabric,
cork boards, lanyard straps, wooden tables, denim jackets, felt, cluttered desks.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

Surface = Callable[[np.random.Generator, int, int], np.ndarray]


def noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Smooth value noise in [0, 1] with about ``cells`` features across the long side."""
    gh = max(2, int(round(cells * h / max(h, w))) + 2)
    gw = max(2, int(round(cells * w / max(h, w))) + 2)
    grid = rng.random((gh, gw), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _colour(rng: np.random.Generator, palette: list[tuple[float, float, float]]) -> np.ndarray:
    """Pick a palette colour and jitter it, so no two photos share an exact shade."""
    base = np.asarray(palette[rng.integers(len(palette))], np.float32)
    return np.clip(base * rng.uniform(0.85, 1.15) + rng.normal(0, 0.03, 3), 0, 1).astype(np.float32)


def _folds(rng: np.random.Generator, h: int, w: int, depth: float) -> np.ndarray:
    """Soft light/dark undulation, as cloth never lies flat."""
    return (1 - depth / 2 + depth * noise(rng, h, w, rng.uniform(2, 5)))[..., None]


def fabric(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Plain-woven cloth: a fine crossing thread pattern with folds."""
    col = _colour(rng, [(0.75, 0.72, 0.66), (0.3, 0.35, 0.45), (0.55, 0.2, 0.22), (0.2, 0.4, 0.3),
                        (0.15, 0.15, 0.16), (0.85, 0.8, 0.7), (0.5, 0.45, 0.6)])
    period = rng.uniform(3.0, 6.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(-0.3, 0.3)
    u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
    weave = 0.5 + 0.25 * np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period)
    threads = noise(rng, h, w, w / 6) * 0.25
    tex = 0.85 + 0.25 * (weave + threads - 0.6)
    return np.clip(col * tex[..., None] * _folds(rng, h, w, 0.35), 0, 1)


def cork(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Cork board: brown base with granules of several sizes."""
    col = _colour(rng, [(0.72, 0.52, 0.33), (0.62, 0.44, 0.28), (0.78, 0.6, 0.42)])
    fine = rng.random((h, w), dtype=np.float32)
    fine = cv2.GaussianBlur(fine, (0, 0), 1.2)
    mid = noise(rng, h, w, w / 10)
    spots = (cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 2.5) > 0.53).astype(np.float32)
    tex = 0.75 + 0.9 * (fine - 0.5) + 0.25 * (mid - 0.5) - 0.25 * spots
    return np.clip(col * tex[..., None] * _folds(rng, h, w, 0.15), 0, 1)


def wood(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Wooden table: long streaky grain plus slowly wandering growth rings."""
    light = _colour(rng, [(0.74, 0.55, 0.36), (0.6, 0.42, 0.26), (0.42, 0.28, 0.17), (0.82, 0.68, 0.5)])
    dark = light * rng.uniform(0.5, 0.7) * np.array([1.0, 0.92, 0.85], np.float32)
    d = int(np.ceil(np.hypot(h, w)))
    # Texture with horizontal grain on a square covering any rotation.
    streaks = cv2.resize(rng.random((d, 6), dtype=np.float32), (d, d), interpolation=cv2.INTER_LINEAR)
    fine = cv2.resize(rng.random((d, 40), dtype=np.float32), (d, d), interpolation=cv2.INTER_LINEAR)
    yy = np.arange(d, dtype=np.float32)[:, None]
    warp = noise(rng, d, d, 3) * rng.uniform(30, 90)
    rings = (0.5 + 0.5 * np.sin((yy + warp) / rng.uniform(5, 14))) ** 4
    t = np.clip(0.45 * rings + 0.5 * (streaks - 0.5) + 0.35 * (fine - 0.5) + 0.25, 0, 1)
    rot = cv2.getRotationMatrix2D((d / 2, d / 2), rng.uniform(0, 180), 1.0)
    rot[:, 2] -= [(d - w) / 2, (d - h) / 2]
    t = cv2.warpAffine(t, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)[..., None]
    out = light * (1 - t) + dark * t
    return np.clip(out * (0.88 + 0.14 * noise(rng, h, w, 2))[..., None], 0, 1)


def denim(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Denim jacket: indigo twill (diagonal ribs) with white weft flecks and fades."""
    col = _colour(rng, [(0.2, 0.28, 0.45), (0.3, 0.4, 0.58), (0.15, 0.18, 0.3), (0.45, 0.55, 0.7)])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(3.5, 6.0)
    twill = 0.5 + 0.5 * np.sin(2 * np.pi * (xx + yy) / period)
    flecks = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 0.7)
    fade = noise(rng, h, w, 4)
    white = np.clip((flecks - 0.5) * 2.2 + 0.25 * fade, 0, 1)[..., None] * 0.35
    base = col * (0.8 + 0.3 * twill)[..., None]
    out = base * (1 - white) + np.array([0.85, 0.87, 0.9], np.float32) * white
    return np.clip(out * _folds(rng, h, w, 0.4), 0, 1)


def felt(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Felt pin board: flat colour with fuzzy fibres."""
    col = _colour(rng, [(0.1, 0.1, 0.1), (0.2, 0.2, 0.22), (0.55, 0.1, 0.12), (0.1, 0.25, 0.45),
                        (0.75, 0.75, 0.72), (0.1, 0.35, 0.25), (0.85, 0.6, 0.7)])
    fib = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 1.5)
    tex = 0.85 + 0.9 * (fib - 0.5) + 0.1 * noise(rng, h, w, 8)
    return np.clip(col * tex[..., None] * _folds(rng, h, w, 0.15), 0, 1)


def paper(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """White or pale sheet, a seller's product backdrop."""
    col = _colour(rng, [(0.93, 0.93, 0.92), (0.96, 0.94, 0.9), (0.88, 0.9, 0.93), (0.92, 0.88, 0.86)])
    grad = noise(rng, h, w, 1.5)
    fib = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 0.8)
    return np.clip(col * (0.9 + 0.12 * grad + 0.04 * (fib - 0.5))[..., None], 0, 1)


def _line_kernel(length: int, angle_deg: float) -> np.ndarray:
    """Normalised straight-line kernel, for grain streaks and motion blur."""
    k = np.zeros((length, length), np.float32)
    c = length // 2
    dx, dy = np.cos(np.radians(angle_deg)) * c, np.sin(np.radians(angle_deg)) * c
    cv2.line(k, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
    return k / max(k.sum(), 1e-6)


def clutter(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A busy desk: a table surface with out-of-focus objects lying on it."""
    out = (wood if rng.random() < 0.5 else felt)(rng, h, w)
    for _ in range(rng.integers(3, 8)):
        col = rng.random(3).astype(np.float32)
        col = (0.55 * col + 0.45 * col.mean()) * rng.uniform(0.4, 1.0)  # muted, like real objects
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        sx, sy = rng.uniform(0.08, 0.4) * w, rng.uniform(0.08, 0.4) * h
        mask = np.zeros((h, w), np.float32)
        if rng.random() < 0.5:
            box = cv2.boxPoints(((cx, cy), (sx, sy), rng.uniform(0, 180)))
            cv2.fillConvexPoly(mask, box.astype(np.int32), 1.0)
        else:
            cv2.ellipse(mask, (int(cx), int(cy)), (int(sx / 2), int(sy / 2)), rng.uniform(0, 180), 0, 360, 1.0, -1)
        shadow = cv2.GaussianBlur(np.roll(mask, (int(0.02 * h), int(0.02 * w)), (0, 1)), (0, 0), 0.02 * w)
        out = out * (1 - 0.35 * shadow[..., None])
        shade = (0.8 + 0.4 * noise(rng, h, w, 2))[..., None]
        out = out * (1 - mask[..., None]) + col * shade * mask[..., None]
    if rng.random() < 0.6:  # a sheet of paper with lines of text
        sheet = paper(rng, h, w)
        m = np.zeros((h, w), np.float32)
        box = cv2.boxPoints(((rng.uniform(0, w), rng.uniform(0, h)), (0.5 * w, 0.65 * w), rng.uniform(0, 180)))
        cv2.fillConvexPoly(m, box.astype(np.int32), 1.0)
        for k in range(12):
            y = int(rng.uniform(0, h))
            cv2.line(sheet, (int(rng.uniform(0, w / 2)), y), (int(rng.uniform(w / 2, w)), y), (0.3, 0.3, 0.35), 2)
        out = out * (1 - m[..., None]) + sheet * m[..., None]
    return cv2.GaussianBlur(out, (0, 0), rng.uniform(2.0, 6.0) * w / 800)


def lanyard(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A woven lanyard strap across some other surface; returns (image, strap mask).

    The mask lets callers put pins on the strap, where they are worn.
    """
    under = SURFACES[("fabric", "wood", "denim", "felt")[rng.integers(4)]](rng, h, w)
    under = cv2.GaussianBlur(under, (0, 0), 2.0 * w / 800) * 0.8
    col = _colour(rng, [(0.08, 0.08, 0.1), (0.7, 0.1, 0.12), (0.1, 0.2, 0.55), (0.1, 0.45, 0.25),
                        (0.85, 0.55, 0.1), (0.5, 0.2, 0.55)])
    width = rng.uniform(0.3, 0.5) * min(h, w)
    angle = rng.uniform(-35, 35) + (90 if rng.random() < 0.3 else 0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.radians(angle)
    across = -(xx - w / 2) * np.sin(a) + (yy - h / 2) * np.cos(a) - rng.uniform(-0.15, 0.15) * h
    along = (xx - w / 2) * np.cos(a) + (yy - h / 2) * np.sin(a)
    mask = np.clip(width / 2 - np.abs(across) + 0.5, 0, 1)
    ribs = 0.85 + 0.15 * np.sin(2 * np.pi * along / rng.uniform(2.5, 4.5))
    edge = np.clip(1 - (width / 2 - np.abs(across)) / (0.06 * width), 0, 1)  # stitched border
    strap = col * (ribs * (1 - 0.35 * edge))[..., None] * (0.9 + 0.2 * noise(rng, h, w, 4))[..., None]
    shadow = cv2.GaussianBlur(mask, (0, 0), 0.03 * w)
    out = under * (1 - 0.5 * shadow[..., None])
    out = out * (1 - mask[..., None]) + strap * mask[..., None]
    return np.clip(out, 0, 1).astype(np.float32), mask


SURFACES: dict[str, Surface] = {
    "fabric": fabric,
    "cork": cork,
    "wood": wood,
    "denim": denim,
    "felt": felt,
    "paper": paper,
    "clutter": clutter,
}


def surface(rng: np.random.Generator, h: int, w: int, kind: str | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """A random (or named) surface; returns (image, lanyard mask or None, kind)."""
    kinds = list(SURFACES) + ["lanyard"]
    if kind is None:
        kind = kinds[rng.integers(len(kinds))]
    if kind == "lanyard":
        img, mask = lanyard(rng, h, w)
        return img, mask, kind
    return SURFACES[kind](rng, h, w).astype(np.float32), None, kind
