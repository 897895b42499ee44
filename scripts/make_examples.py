"""Regenerate the small sample catalogue and photo committed under examples/.

Usage: python scripts/make_examples.py [--out examples]

Five simple pin designs drawn with Pillow (enamel colour fields, a metal rim,
raised metal lines) and one phone-style photo of one of them: tilted,
rotated, on a fabric-like background, JPEG-compressed. Deterministic.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 320
METALS = {"gold": (212, 175, 55), "silver": (200, 200, 205), "black nickel": (60, 60, 66)}
PINS = [
    ("sun-gold", "Smiling Sun", "gold", [(250, 200, 40), (240, 120, 30)], "sun"),
    ("wave-silver", "Great Wave", "silver", [(40, 110, 200), (240, 240, 250)], "wave"),
    ("cat-black", "Night Cat", "black nickel", [(40, 40, 50), (250, 220, 60)], "cat"),
    ("heart-gold", "Red Heart", "gold", [(220, 30, 60), (250, 150, 170)], "heart"),
    ("leaf-silver", "Green Leaf", "silver", [(40, 160, 70), (160, 220, 120)], "leaf"),
]


def draw_pin(metal: tuple[int, int, int], colours: list[tuple[int, int, int]], motif: str) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), (246, 244, 240))
    draw = ImageDraw.Draw(image)
    c, r = SIZE // 2, SIZE // 2 - 14
    draw.ellipse([c - r - 8, c - r - 8, c + r + 8, c + r + 8], fill=tuple(int(v * 0.7) for v in metal))
    draw.ellipse([c - r, c - r, c + r, c + r], fill=metal)
    draw.ellipse([c - r + 10, c - r + 10, c + r - 10, c + r - 10], fill=colours[1])
    line = dict(fill=metal, width=6)
    if motif == "sun":
        for k in range(12):
            a = k * math.pi / 6
            draw.line([c + 60 * math.cos(a), c + 60 * math.sin(a), c + 115 * math.cos(a), c + 115 * math.sin(a)], **line)
        draw.ellipse([c - 60, c - 60, c + 60, c + 60], fill=colours[0], outline=metal, width=6)
        draw.arc([c - 30, c - 20, c + 30, c + 30], 20, 160, fill=metal, width=6)
    elif motif == "wave":
        for k in range(4):
            y = c - 60 + k * 40
            draw.arc([c - 120, y - 40, c, y + 40], 200, 360, fill=metal, width=8)
            draw.arc([c, y - 40, c + 120, y + 40], 180, 340, fill=colours[0], width=18)
    elif motif == "cat":
        draw.polygon([(c - 80, c + 90), (c - 70, c - 60), (c - 40, c - 20), (c + 40, c - 20), (c + 70, c - 60),
                      (c + 80, c + 90)], fill=colours[0], outline=metal)
        draw.ellipse([c - 45, c + 5, c - 15, c + 35], fill=colours[1], outline=metal, width=4)
        draw.ellipse([c + 15, c + 5, c + 45, c + 35], fill=colours[1], outline=metal, width=4)
    elif motif == "heart":
        draw.ellipse([c - 90, c - 70, c, c + 20], fill=colours[0], outline=metal, width=6)
        draw.ellipse([c, c - 70, c + 90, c + 20], fill=colours[0], outline=metal, width=6)
        draw.polygon([(c - 86, c - 5), (c + 86, c - 5), (c, c + 100)], fill=colours[0], outline=metal)
    else:
        draw.ellipse([c - 110, c - 50, c + 110, c + 50], fill=colours[0], outline=metal, width=6)
        draw.line([c - 100, c, c + 100, c], **line)
        for k in range(-3, 4):
            draw.line([c + k * 25, c, c + k * 25 + 20, c - 35], **line)
    gloss = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(gloss).ellipse([c - 90, c - 120, c + 10, c - 60], fill=70)
    image.paste((255, 255, 255), mask=gloss.filter(ImageFilter.GaussianBlur(18)))
    return image


def phone_photo(pin: Image.Image, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = 640, 480
    weave = (np.sin(np.arange(width)[None, :] * 0.9) * np.sin(np.arange(height)[:, None] * 0.9) * 12
             + rng.normal(0, 6, (height, width)))
    background = np.stack([70 + weave, 90 + weave, 130 + weave], axis=-1).clip(0, 255).astype(np.uint8)
    photo = Image.fromarray(background)
    mask = Image.new("L", pin.size, 0)
    ImageDraw.Draw(mask).ellipse([6, 6, SIZE - 7, SIZE - 7], fill=255)  # the rim, not the backdrop
    rotated = pin.rotate(23, resample=Image.BICUBIC, expand=True)
    rotated_mask = mask.rotate(23, resample=Image.BICUBIC, expand=True)
    scale = 0.9
    target = (int(rotated.width * scale), int(rotated.height * 0.8 * scale))  # foreshortened: tilted ~35 degrees
    shadow = rotated_mask.resize(target).filter(ImageFilter.GaussianBlur(10))
    photo.paste((20, 25, 40), (200, 86), shadow.point(lambda v: v // 2))
    photo.paste(rotated.resize(target, Image.BICUBIC), (180, 70), rotated_mask.resize(target))
    return photo.filter(ImageFilter.GaussianBlur(0.8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples"))
    out = parser.parse_args().out
    for pin_id, name, metal, colours, motif in PINS:
        folder = out / "catalogue" / pin_id
        folder.mkdir(parents=True, exist_ok=True)
        draw_pin(METALS[metal], colours, motif).save(folder / "front.png", optimize=True)
        (folder / "pin.json").write_text(json.dumps({"name": name, "metal": metal}, indent=2) + "\n")
    phone_photo(draw_pin(METALS["gold"], PINS[3][3], "heart"), seed=3).save(out / "photo.jpg", quality=85)
    print(f"wrote {len(PINS)} pins and a photo under {out}")


if __name__ == "__main__":
    main()
