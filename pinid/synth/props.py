"""Things that get in the way in real photos: fingers, pin-back clutches, overlay text.

Occluders are drawn over a pin after it is placed; overlays are what
marketplace re-uploads add (watermarks, price stickers).
"""

from __future__ import annotations

import cv2
import numpy as np

from .photo import Polygon

SKIN = [(0.94, 0.76, 0.65), (0.86, 0.64, 0.5), (0.7, 0.5, 0.37), (0.5, 0.34, 0.24), (0.35, 0.23, 0.16)]


def _centre_size(poly: Polygon) -> tuple[np.ndarray, float]:
    p = np.asarray(poly, np.float32)
    return p.mean(axis=0), float(np.linalg.norm(p[0] - p[2]) / np.sqrt(2))


def _blend(canvas: np.ndarray, colour: np.ndarray, mask: np.ndarray) -> None:
    m = mask[..., None]
    canvas[:] = canvas * (1 - m) + colour * m


def finger(canvas: np.ndarray, poly: Polygon, rng: np.random.Generator) -> None:
    """A fingertip holding the pin, coming in from outside and covering part of its edge."""
    h, w = canvas.shape[:2]
    c, s = _centre_size(poly)
    ang = rng.uniform(0, 2 * np.pi)
    d = np.array([np.cos(ang), np.sin(ang)], np.float32)
    radius = s * rng.uniform(0.22, 0.32)
    tip = c + d * s * rng.uniform(0.3, 0.5)
    far = tip + d * 3 * max(h, w)
    mask = np.zeros((h, w), np.float32)
    cv2.line(mask, tuple(int(v) for v in tip), tuple(int(v) for v in far), 1.0, int(2 * radius))
    cv2.circle(mask, tuple(int(v) for v in tip), int(radius), 1.0, -1)
    # Rounded shading across the finger: brighter along its axis.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    across = np.abs(-(xx - tip[0]) * d[1] + (yy - tip[1]) * d[0]) / radius
    shade = np.clip(1.05 - 0.45 * across**2, 0.4, 1.1)
    skin = np.asarray(SKIN[rng.integers(len(SKIN))], np.float32) * rng.uniform(0.85, 1.1)
    pores = 0.94 + 0.12 * cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 1.5)
    colour = skin * (shade * pores)[..., None]
    # The nail sits just behind the tip: slightly pinker, paler and glossier.
    nail = np.zeros((h, w), np.float32)
    nc = tip + d * radius * 0.55
    cv2.ellipse(nail, (int(nc[0]), int(nc[1])), (int(radius * 0.5), int(radius * 0.62)),
                np.degrees(ang), 0, 360, 1.0, -1)
    nail = cv2.GaussianBlur(nail, (0, 0), radius * 0.08) * rng.uniform(0.15, 0.3)
    colour = colour * (1 - nail[..., None]) + nail[..., None] * np.minimum(skin * 1.25 + 0.1, 1)
    shadow = cv2.GaussianBlur(np.roll(mask, (int(radius * 0.3), int(radius * 0.2)), (0, 1)), (0, 0), radius * 0.4)
    canvas *= (1 - 0.45 * shadow)[..., None]
    # Closer to the lens than the pin, so a little out of focus.
    _blend(canvas, colour, cv2.GaussianBlur(mask, (0, 0), max(1.2, 0.08 * radius)))


def clutch(canvas: np.ndarray, poly: Polygon, rng: np.random.Generator) -> None:
    """A pin-back clutch (rubber or butterfly) lying over one corner of the pin."""
    c, s = _centre_size(poly)
    p = np.asarray(poly, np.float32)
    corner = p[rng.integers(4)]
    pos = c + (corner - c) * rng.uniform(0.6, 0.9)
    h, w = canvas.shape[:2]
    r = s * rng.uniform(0.1, 0.15)
    mask = np.zeros((h, w), np.float32)
    x, y = int(pos[0]), int(pos[1])
    if rng.random() < 0.5:  # rubber clutch: dark disc with a raised ring and a hole
        col = np.array((0.08, 0.08, 0.09) if rng.random() < 0.7 else (0.7, 0.12, 0.12), np.float32)
        cv2.circle(mask, (x, y), int(r), 1.0, -1)
        ring = np.zeros_like(mask)
        cv2.circle(ring, (x, y), int(r * 0.55), 1.0, max(1, int(r * 0.15)))
        colour = col + 0.35 * ring[..., None]
    else:  # butterfly clutch: two curled metal wings
        col = np.array((0.95, 0.78, 0.4) if rng.random() < 0.5 else (0.85, 0.86, 0.88), np.float32)
        a = rng.uniform(0, 180)
        for sgn in (-1, 1):
            off = (int(x + sgn * r * 0.7 * np.cos(np.radians(a))), int(y + sgn * r * 0.7 * np.sin(np.radians(a))))
            cv2.ellipse(mask, off, (int(r * 0.75), int(r * 0.55)), a, 0, 360, 1.0, -1)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        colour = col * (0.55 + 0.6 * (0.5 + 0.5 * np.sin((xx - x) / max(r * 0.25, 1))))[..., None]
    shadow = cv2.GaussianBlur(np.roll(mask, (int(r * 0.25), int(r * 0.25)), (0, 1)), (0, 0), r * 0.3)
    canvas *= (1 - 0.5 * shadow)[..., None]
    _blend(canvas, colour, cv2.GaussianBlur(mask, (0, 0), 0.8))


def overlay_text(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-upload's watermark or price tag, drawn on a uint8 RGB image."""
    from PIL import Image, ImageDraw, ImageFont

    pil = Image.fromarray(img).convert("RGBA")
    layer = Image.new("RGBA", pil.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = pil.size
    if rng.random() < 0.5:
        text = ("@pin_trader", "pinswap", "SAMPLE", "shop.example", "© enamel_co")[rng.integers(5)]
        font = ImageFont.load_default(size=int(rng.uniform(0.05, 0.1) * w))
        pos = (int(rng.uniform(0.05, 0.5) * w), int(rng.uniform(0.1, 0.85) * h))
        draw.text(pos, text, font=font, fill=(255, 255, 255, int(rng.uniform(70, 150))))
    else:
        text = ("$12", "8.50 GBP", "EUR 10", "$25 OBO", "SOLD", "ISO / trade")[rng.integers(6)]
        font = ImageFont.load_default(size=int(rng.uniform(0.05, 0.08) * w))
        x, y = int(rng.uniform(0.03, 0.6) * w), int(rng.uniform(0.03, 0.85) * h)
        box = draw.textbbox((x, y), text, font=font)
        pad = int(0.015 * w)
        bg = ((230, 40, 40, 230), (255, 255, 255, 235), (20, 20, 20, 220))[rng.integers(3)]
        draw.rectangle((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), fill=bg)
        draw.text((x, y), text, font=font, fill=(0, 0, 0, 255) if bg[0] == 255 else (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(pil, layer).convert("RGB"))
