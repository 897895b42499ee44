"""Whole photos: a catalogue product shot, a collector's query photo, a board, a listing.

Each function takes the pins' materials and a seeded ``Generator`` and returns
encoded image bytes plus the geometry the ground truth needs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from . import props
from .backgrounds import paper, surface
from .enamel import Lighting, Material, shade
from .photo import (CameraOptions, Polygon, Pose, camera, frame_size, homographies, jpeg,
                    place_pin, project, random_light, silhouette_box)

SELLER_CAMERA = CameraOptions(max_defocus=0.6, p_motion=0.0, noise=0.4, jpeg_quality=(82, 95),
                              max_white_balance=0.3, max_exposure=0.25)


@dataclass(frozen=True)
class QueryOptions:
    """Knobs for collector photos; defaults follow the benchmark spec."""

    max_tilt: float = 40.0
    cover: tuple[float, float] = (0.10, 0.80)  # share of the frame the pin covers
    p_finger: float = 0.12
    p_clutch: float = 0.1
    p_neighbours: float = 0.25
    # Long side of the frame, (min, max) px; None keeps the benchmark's 640-1024. Smaller frames
    # are much cheaper (training a stand-in model on thousands of photos); the rng draws are the same.
    long_side: tuple[int, int] | None = None


def catalogue_image(mat: Material, rng: np.random.Generator, size: int = 512) -> bytes:
    """Clean product shot: front view, soft studio light, plain light backdrop, PNG."""
    from PIL import Image

    tone = rng.uniform(0.88, 1.0)
    bg = np.full((size, size, 3), tone, np.float32) * np.asarray(rng.uniform(0.97, 1.0, 3), np.float32)
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    bg = bg * (1.0 - 0.06 * yy)
    light = Lighting(direction=(-0.3, -0.5, 0.81), ambient=0.66, diffuse=0.4, specular=0.5, env_phase=0.6)
    rgb = shade(mat, light)
    tex = mat.size
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA) if tex != size else rgb
    alpha = cv2.resize(mat.alpha, (size, size), interpolation=cv2.INTER_AREA) if tex != size else mat.alpha
    shadow = cv2.GaussianBlur(np.roll(alpha, (int(0.012 * size), int(0.008 * size)), (0, 1)), (0, 0), 0.012 * size)
    bg = bg * (1 - 0.3 * shadow)[..., None]
    out = bg * (1 - alpha[..., None]) + rgb * alpha[..., None]
    buf = io.BytesIO()
    Image.fromarray((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _random_pose(rng: np.random.Generator, frame: tuple[int, int], cover: float, max_tilt: float) -> Pose:
    w, h = frame
    size = float(np.sqrt(cover * w * h)) / 0.9
    size = min(size, 1.05 * min(w, h))
    m = 0.42 * size
    cx = rng.uniform(m, w - m) if w > 2 * m else w / 2
    cy = rng.uniform(m, h - m) if h > 2 * m else h / 2
    rot = rng.uniform(-25, 25) if rng.random() < 0.5 else rng.uniform(-180, 180)
    return Pose(cx, cy, size, rot, rng.uniform(0, max_tilt), rng.uniform(0, 360))


def query_photo(mat: Material, rng: np.random.Generator, neighbours: Sequence[Material] = (),
                opts: QueryOptions = QueryOptions()) -> tuple[bytes, Polygon]:
    """A collector's phone photo of one pin; ``neighbours`` may appear beside it."""
    w, h = frame_size(rng) if opts.long_side is None else frame_size(rng, opts.long_side)
    # The surface is out of focus (depth of field), so draw it at half size and enlarge: much cheaper.
    canvas, strap, _ = surface(rng, h // 2, w // 2)
    canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.3, 1.5) * max(w, h) / 800)
    canvas = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_LINEAR)
    strap = cv2.resize(strap, (w, h), interpolation=cv2.INTER_LINEAR) if strap is not None else None
    light = random_light(rng)
    lo, hi = np.log(opts.cover[0]), np.log(opts.cover[1])
    pose = _random_pose(rng, (w, h), float(np.exp(rng.uniform(lo, hi))), opts.max_tilt)
    if strap is not None:  # worn on a lanyard: put it on the strap
        ys, xs = np.nonzero(strap > 0.5)
        if len(xs):
            i = rng.integers(len(xs))
            pose = Pose(float(xs[i]), float(ys[i]), pose.size, pose.rotation, pose.tilt, pose.tilt_axis)
    if neighbours and rng.random() < opts.p_neighbours:
        for other in neighbours:
            ang = rng.uniform(0, 2 * np.pi)
            dist = pose.size * rng.uniform(0.95, 1.3)
            p = Pose(pose.cx + dist * np.cos(ang), pose.cy + dist * np.sin(ang), pose.size * rng.uniform(0.6, 1.0),
                     rng.uniform(-180, 180), pose.tilt, pose.tilt_axis)
            place_pin(canvas, other, p, light, rng)
    poly = place_pin(canvas, mat, pose, light, rng)
    if rng.random() < opts.p_finger:
        props.finger(canvas, poly, rng)
    elif rng.random() < opts.p_clutch:
        props.clutch(canvas, poly, rng)
    img = camera(canvas, rng, CameraOptions())
    return jpeg(img, int(rng.integers(50, 96))), poly


def _inside(poly: Polygon, w: int, h: int, margin: float = 2.0) -> bool:
    p = np.asarray(poly)
    return bool((p[:, 0] >= margin).all() and (p[:, 0] <= w - margin).all()
                and (p[:, 1] >= margin).all() and (p[:, 1] <= h - margin).all())


def board_photo(mats: Sequence[Material], rng: np.random.Generator) -> tuple[bytes, list[Polygon | None]]:
    """Several pins on one board or lanyard, seen under one camera tilt.

    Returns one polygon per pin; a pin that could not be placed without
    overlapping (rare) gets ``None`` and is left out of the photo.
    """
    w, h = frame_size(rng, (800, 1024))
    kind = ("cork", "felt", "fabric", "denim", "lanyard", "cork", "felt")[rng.integers(7)]
    canvas, strap, _ = surface(rng, h, w, kind)
    light = random_light(rng)
    tilt, axis = rng.uniform(0, 30), rng.uniform(0, 360)
    n = len(mats)
    size = min(w, h) * rng.uniform(0.7, 0.95) / np.sqrt(n + 0.8)
    if strap is not None:
        size *= 0.8
    spots = np.argwhere(strap > 0.6) if strap is not None else None
    placed: list[tuple[float, float, float]] = []
    polys: list[Polygon | None] = []
    for mat in mats:
        poly = None
        for _ in range(60):
            s = size * rng.uniform(0.85, 1.1)
            if spots is not None and len(spots):
                cy, cx = spots[rng.integers(len(spots))].astype(float)
            else:
                cx, cy = rng.uniform(0.5 * s, w - 0.5 * s), rng.uniform(0.5 * s, h - 0.5 * s)
            if any(np.hypot(cx - x, cy - y) < 0.62 * (s + r) for x, y, r in placed):
                continue
            pose = Pose(float(cx), float(cy), float(s), rng.uniform(-25, 25), tilt, axis)
            front, _ = homographies(pose, mat.size, (w, h))
            if not _inside(project(front, silhouette_box(mat)), w, h):
                continue
            poly = place_pin(canvas, mat, pose, light, rng)
            placed.append((cx, cy, s))
            break
        polys.append(poly)
    img = camera(canvas, rng, CameraOptions(max_defocus=1.2, p_motion=0.1))
    return jpeg(img, int(rng.integers(60, 96))), polys


def _backing_card(canvas: np.ndarray, pose: Pose, rng: np.random.Generator) -> None:
    """A printed backing card under the pin, as many sellers photograph pins."""
    tex = 256
    card = np.zeros((tex, tex, 4), np.float32)
    col = np.asarray(rng.uniform(0.15, 0.95, 3), np.float32)
    cv2.rectangle(card, (40, 8), (216, 248), (*col.tolist(), 1.0), -1)
    cv2.rectangle(card, (60, 214), (196, 226), (*(1 - col).tolist(), 1.0), -1)  # printed brand line
    big = Pose(pose.cx, pose.cy, pose.size * 1.55, pose.rotation, pose.tilt, pose.tilt_axis)
    front, _ = homographies(big, tex, (canvas.shape[1], canvas.shape[0]))
    warped = cv2.warpPerspective(card, front, (canvas.shape[1], canvas.shape[0]))
    shadow = cv2.GaussianBlur(np.roll(warped[..., 3], (6, 6), (0, 1)), (0, 0), 5)
    canvas *= (1 - 0.3 * shadow)[..., None]
    a = warped[..., 3:4]
    canvas[:] = canvas * (1 - a) + warped[..., :3] * a


def seller_photo(mat: Material, rng: np.random.Generator) -> bytes:
    """A marketplace listing photo: pin large, upright, well lit, often on a backing card."""
    w, h = frame_size(rng, (720, 1024))
    if rng.random() < 0.5:
        w = h = min(w, h)
    kind = ("paper", "wood", "felt", "fabric", "paper")[rng.integers(5)]
    canvas = surface(rng, h, w, kind)[0] if kind != "paper" else paper(rng, h, w)
    pose = _random_pose(rng, (w, h), rng.uniform(0.2, 0.45), 12)
    pose = Pose(w / 2 + rng.uniform(-0.05, 0.05) * w, h / 2 + rng.uniform(-0.05, 0.05) * h,
                pose.size, rng.uniform(-8, 8), pose.tilt, pose.tilt_axis)
    if rng.random() < 0.5:
        _backing_card(canvas, pose, rng)
    light = random_light(rng)
    place_pin(canvas, mat, pose, light, rng)
    img = camera(canvas, rng, SELLER_CAMERA)
    return jpeg(img, int(rng.integers(*SELLER_CAMERA.jpeg_quality)))


def reupload(data: bytes, rng: np.random.Generator) -> bytes:
    """Someone else's re-upload of a photo: cropped, resized, re-encoded, maybe captioned."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    h, w = img.shape[:2]
    if rng.random() < 0.7:
        keep = rng.uniform(0.75, 0.97)
        ch, cw = int(h * keep), int(w * rng.uniform(keep, 1.0))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        img = img[y0 : y0 + ch, x0 : x0 + cw]
    scale = rng.uniform(0.45, 0.95)
    img = cv2.resize(img, (max(64, int(img.shape[1] * scale)), max(64, int(img.shape[0] * scale))),
                     interpolation=cv2.INTER_AREA)
    if rng.random() < 0.3:  # a filter: brighter, warmer or more saturated
        f = img.astype(np.float32) * rng.uniform(0.9, 1.15, 3)
        img = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.65:
        img = props.overlay_text(np.ascontiguousarray(img), rng)
    return jpeg(np.ascontiguousarray(img), int(rng.integers(40, 90)))
