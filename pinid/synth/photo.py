"""Phone-photo simulation: pose a pin in 3-D, light it, and run a camera on it.

The pose is a real pinhole projection of the pin plane (and of its back face,
which shows as the metal edge under tilt), so ground-truth polygons are exact.
Camera effects run in the order a phone applies them: optics (blur), sensor
(noise), then processing (white balance, sharpening, JPEG).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .enamel import Lighting, Material, shade

Polygon = list[list[float]]


@dataclass(frozen=True)
class Pose:
    """Where a pin lies in the photo: centre (px), size of its long side (px), angles (degrees)."""

    cx: float
    cy: float
    size: float
    rotation: float = 0.0
    tilt: float = 0.0
    tilt_axis: float = 0.0


@dataclass(frozen=True)
class CameraOptions:
    """Ranges for the camera stage; ``clean`` settings are used for seller photos."""

    max_defocus: float = 2.2
    p_motion: float = 0.25
    noise: float = 1.0
    jpeg_quality: tuple[int, int] = (50, 95)
    max_white_balance: float = 1.0
    max_exposure: float = 0.7


def _rotation(rotation: float, tilt: float, axis: float) -> np.ndarray:
    """3-D rotation: spin in the plane, then tilt about an in-plane axis."""
    r, t, a = np.radians([rotation, tilt, axis])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    k = np.array([np.cos(a), np.sin(a), 0.0])
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rt = np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * kx @ kx  # Rodrigues
    return rt @ rz


def homographies(pose: Pose, tex: int, frame: tuple[int, int], depth: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """Homographies mapping texture pixels to the photo for the front face and the back face.

    ``depth`` is the pin thickness as a fraction of its width; the back face
    peeks out under tilt and is drawn as the metal edge.
    """
    w, h = frame
    f = 1.1 * max(w, h)
    dist = f * tex / pose.size
    rot = _rotation(pose.rotation, pose.tilt, pose.tilt_axis)
    src = np.array([[0, 0], [tex, 0], [tex, tex], [0, tex]], np.float32)
    out = []
    for z in (0.0, depth * tex):
        pts = np.c_[src - tex / 2, np.full(4, z)] @ rot.T
        pts[:, 2] += dist
        # Shift so the pin centre projects to (cx, cy) wherever the pin is.
        dst = f * pts[:, :2] / pts[:, 2:3] + [pose.cx, pose.cy]
        out.append(cv2.getPerspectiveTransform(src, dst.astype(np.float32)))
    return out[0], out[1]


def silhouette_box(mat: Material) -> np.ndarray:
    """Corners of the pin's bounding box in texture pixels (clockwise from top-left)."""
    ys, xs = np.nonzero(mat.alpha > 0.5)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def project(hom: np.ndarray, pts: np.ndarray) -> Polygon:
    """Apply a homography to points; returns plain lists for JSON."""
    p = cv2.perspectiveTransform(pts.reshape(-1, 1, 2).astype(np.float64), hom).reshape(-1, 2)
    return [[round(float(x), 2), round(float(y), 2)] for x, y in p]


def random_light(rng: np.random.Generator) -> Lighting:
    """Indoor or daylight key light from somewhere above the pin."""
    el = np.radians(rng.uniform(35, 80))
    az = rng.uniform(0, 2 * np.pi)
    d = (np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el))
    return Lighting(direction=d, ambient=rng.uniform(0.45, 0.7), diffuse=rng.uniform(0.3, 0.55),
                    specular=rng.uniform(0.3, 0.9), env_phase=rng.uniform(0, 2 * np.pi))


def glare_map(rng: np.random.Generator, size: int) -> np.ndarray:
    """A reflection of a lamp or window on the glossy surface, in texture coordinates.

    Lamps give a small bright oval, windows a soft-edged long streak.
    """
    g = np.zeros((size, size), np.float32)
    c = (int(rng.uniform(0.15, 0.85) * size), int(rng.uniform(0.15, 0.85) * size))
    if rng.random() < 0.5:
        ax = (int(rng.uniform(0.03, 0.1) * size), int(rng.uniform(0.02, 0.06) * size))
        blur = rng.uniform(0.01, 0.03)
    else:
        ax = (int(rng.uniform(0.25, 0.6) * size), int(rng.uniform(0.04, 0.12) * size))
        blur = rng.uniform(0.03, 0.08)
    cv2.ellipse(g, c, ax, rng.uniform(0, 180), 0, 360, 1.0, -1)
    g = cv2.GaussianBlur(g, (0, 0), blur * size)
    return g * rng.uniform(0.35, 1.0)


def _warp(img: np.ndarray, hom: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    return cv2.warpPerspective(img, hom, frame, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def place_pin(canvas: np.ndarray, mat: Material, pose: Pose, light: Lighting, rng: np.random.Generator) -> Polygon:
    """Composite one lit, posed pin (shadow, metal edge, face) onto ``canvas`` in place.

    Work happens at about the pin's on-screen resolution and inside its
    bounding box only, which keeps small pins cheap. Returns the warped
    bounding box of the pin face in image coordinates.
    """
    h, w = canvas.shape[:2]
    # Shade at roughly on-screen resolution: cheaper, and no aliasing when warping down.
    small = int(min(mat.size, max(32, round(1.5 * pose.size))))
    mat = mat.resized(small)
    glare = glare_map(rng, small) * mat.alpha if rng.random() < 0.6 else None
    rgb = shade(mat, replace(light, glare=glare))
    rgba = np.dstack([rgb * mat.alpha[..., None], mat.alpha])
    front, back = homographies(pose, small, (w, h))
    ld = np.asarray(light.direction)
    off = -ld[:2] / max(ld[2], 0.3) * pose.size * 0.03
    shift = np.array([[1, 0, off[0]], [0, 1, off[1]], [0, 0, 1]])
    blur = max(1.0, pose.size * 0.025)

    corners = np.array([[0, 0], [small, 0], [small, small], [0, small]], np.float32)
    pts = np.array(project(front, corners) + project(shift @ back, corners))
    x0, y0 = np.floor(pts.min(axis=0) - 3 * blur).astype(int).clip(0, [w, h])
    x1, y1 = np.ceil(pts.max(axis=0) + 3 * blur).astype(int).clip(0, [w, h])
    if x1 <= x0 or y1 <= y0:
        return project(front, silhouette_box(mat))
    to_roi = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    roi = canvas[y0:y1, x0:x1]
    size = (int(x1 - x0), int(y1 - y0))
    face = _warp(rgba, to_roi @ front, size)
    edge = _warp(rgba[..., 3], to_roi @ back, size)
    sh = cv2.GaussianBlur(_warp(rgba[..., 3], to_roi @ shift @ back, size), (0, 0), blur)
    roi *= (1 - 0.55 * sh)[..., None]
    edge_col = mat.tint * rng.uniform(0.35, 0.6)
    roi[:] = roi * (1 - edge[..., None]) + edge_col * edge[..., None]
    a = face[..., 3:4]
    roi[:] = roi * (1 - a) + face[..., :3]
    return project(front, silhouette_box(mat))


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """Straight-line blur kernel: hand shake during the exposure."""
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = np.cos(np.radians(angle)) * c, np.sin(np.radians(angle)) * c
    cv2.line(k, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
    return k / k.sum()


def camera(img: np.ndarray, rng: np.random.Generator, opts: CameraOptions) -> np.ndarray:
    """Optics, sensor and phone processing; float RGB in, uint8 RGB out."""
    h, w = img.shape[:2]
    s = max(h, w) / 800
    sigma = rng.uniform(0, opts.max_defocus) * s
    if sigma > 0.4:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.random() < opts.p_motion:
        img = cv2.filter2D(img, -1, motion_kernel(int(rng.integers(3, 12 * s + 4)), rng.uniform(0, 180)))
    # Exposure and white balance (colour temperature from warm tungsten to cool shade).
    # Auto-exposure aims at mid-grey, missing by up to ``max_exposure`` stops.
    mean = float(cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA).mean())
    target = 0.45 * 2 ** rng.uniform(-opts.max_exposure, opts.max_exposure * 0.6)
    ev = float(np.clip(target / max(mean, 1e-3), 0.5, 2.5))
    t = rng.uniform(-1, 1) * opts.max_white_balance
    wb = np.array([1 + 0.18 * t, 1.0, 1 - 0.22 * t], np.float32)
    img = img * ev * wb
    xs = ((np.arange(w, dtype=np.float32) - w / 2) ** 2)[None, :]
    ys = ((np.arange(h, dtype=np.float32) - h / 2) ** 2)[:, None]
    r2 = (xs + ys) / (0.25 * (w * w + h * h))
    img = img * (1 - rng.uniform(0.05, 0.35) * r2)[..., None]  # vignetting
    # Sensor noise: shot noise grows with signal, plus blotchy chroma noise left by denoising.
    level = opts.noise * rng.uniform(0.005, 0.03) / np.sqrt(ev)
    # Phone denoising leaves grain a little coarser than a pixel: draw it at half size.
    grain = cv2.resize(rng.standard_normal((h // 2 + 1, w // 2 + 1, 3), dtype=np.float32), (w, h))
    img = img + grain * (1.4 * level * np.sqrt(np.clip(img, 0.02, 1)))
    chroma = rng.standard_normal((max(2, h // 6), max(2, w // 6), 3), dtype=np.float32) * level
    img = img + cv2.resize(chroma, (w, h))
    amount = rng.uniform(0.2, 0.9)  # phones over-sharpen
    img = cv2.addWeighted(img, 1 + amount, cv2.GaussianBlur(img, (0, 0), 1.2 * s), -amount, 0)
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    gamma = rng.uniform(0.9, 1.1)  # tone curve
    lut = (np.clip((np.arange(256) / 255.0) ** gamma, 0, 1) * 255 + 0.5).astype(np.uint8)
    return cv2.LUT(out, lut)


def jpeg(img: np.ndarray, quality: int) -> bytes:
    """Encode like a phone or a marketplace upload (4:2:0 chroma subsampling)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality), subsampling=2, optimize=False)
    return buf.getvalue()


def frame_size(rng: np.random.Generator, long_side: tuple[int, int] = (640, 1024)) -> tuple[int, int]:
    """Photo (width, height): portrait or landscape, 4:3 or 16:9 or square."""
    ls = int(rng.integers(long_side[0], long_side[1] + 1))
    ratio = (4 / 3, 16 / 9, 1.0)[rng.choice(3, p=[0.6, 0.25, 0.15])]
    short = int(round(ls / ratio))
    return (ls, short) if rng.random() < 0.4 else (short, ls)
