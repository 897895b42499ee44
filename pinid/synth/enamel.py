"""Turn flat OpenMoji artwork into an enamel-pin *material* and shade it.

A pin is kept as a small material description (albedo, metal mask, height map)
rather than a finished picture, so the catalogue shot and every phone photo can
light the same pin differently: metal lines catch highlights at their bevels,
soft enamel sits recessed below them, and glare lands where the light says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .artwork import Layers

METALS: dict[str, tuple[float, float, float]] = {
    "gold": (1.0, 0.80, 0.40),
    "silver": (0.86, 0.87, 0.90),
    "black nickel": (0.30, 0.30, 0.33),
    "rose gold": (0.96, 0.70, 0.60),
}
METAL_WEIGHTS = (0.4, 0.27, 0.18, 0.15)


@dataclass(frozen=True)
class PinStyle:
    """How one catalogue pin is made: plating, enamel type and recolouring.

    ``hue_shift`` rotates enamel hues (degrees); ``hue_mirror`` reflects them
    first (a palette swap rather than a rotation); ``neutral_tint`` colours
    white/grey enamel so low-colour designs still get distinct colourways.
    """

    metal: str = "gold"
    soft_enamel: bool = True
    hue_shift: float = 0.0
    hue_mirror: bool = False
    neutral_tint: tuple[float, float, float] | None = None


@dataclass
class Material:
    """A pin ready to be lit: float32 arrays of one square size."""

    albedo: np.ndarray  # H x W x 3 enamel / metal base colour
    alpha: np.ndarray  # H x W silhouette coverage
    metal: np.ndarray  # H x W 1 where metal shows
    normal: np.ndarray  # H x W x 3 unit surface normals
    tint: np.ndarray  # 3, metal colour

    @property
    def size(self) -> int:
        return int(self.alpha.shape[0])

    def resized(self, size: int) -> "Material":
        """The same pin at another resolution (area-averaged, normals renormalised)."""
        if size == self.size:
            return self
        r = lambda a: cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)  # noqa: E731
        n = r(self.normal)
        n /= np.linalg.norm(n, axis=2, keepdims=True) + 1e-6
        return Material(r(self.albedo), r(self.alpha), r(self.metal), n, self.tint)


@dataclass(frozen=True)
class Lighting:
    """A scene light: direction (towards the light), strengths and colour."""

    direction: tuple[float, float, float] = (-0.35, -0.45, 0.82)
    ambient: float = 0.62
    diffuse: float = 0.45
    specular: float = 0.55
    env_phase: float = 0.0
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    glare: np.ndarray | None = field(default=None, compare=False)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes: a pin is one solid piece of metal."""
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flood = padded.copy()
    ff_mask = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(flood, ff_mask, (0, 0), 255)
    return (padded | (255 - flood))[1:-1, 1:-1]


def _solid_silhouette(ink: np.ndarray, rim: int) -> np.ndarray:
    """One connected outline around the artwork, grown by the rim width.

    Emoji with separate parts (sparkles, punctuation) are bridged by closing
    with growing radii, falling back to the convex hull like a backing plate.
    """
    shape = ink
    for radius in (6, 18, 40):
        shape = _fill_holes(cv2.morphologyEx(ink, cv2.MORPH_CLOSE, _disk(radius)))
        if cv2.connectedComponents(shape)[0] <= 2:
            break
    else:
        pts = cv2.findNonZero(shape)
        shape = np.zeros_like(ink)
        cv2.fillConvexPoly(shape, cv2.convexHull(pts), 255)
    return cv2.dilate(shape, _disk(rim))


def _drop_small(mask: np.ndarray, min_area: float) -> np.ndarray:
    """Remove specks (where outline strokes cross) so only real filled details remain."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    keep = np.zeros(count, np.uint8)
    keep[1:] = (stats[1:, cv2.CC_STAT_AREA] >= min_area) * 255
    return keep[labels]


def _recolour(rgb: np.ndarray, style: PinStyle) -> np.ndarray:
    """Apply the colourway's hue rotation / mirror and neutral tint."""
    if style.hue_shift == 0 and not style.hue_mirror and style.neutral_tint is None:
        return rgb
    hsv = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    if style.hue_mirror:
        h = 360.0 - h
    hsv[..., 0] = np.mod(h + style.hue_shift, 360.0)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if style.neutral_tint is not None:
        neutral = ((s < 0.12) & (v > 0.55)).astype(np.float32)[..., None]
        out = out * (1 - neutral) + neutral * np.asarray(style.neutral_tint, np.float32) * v[..., None]
    return out


def chroma_fraction(layers: Layers) -> float:
    """Share of the fill that is clearly coloured; low values need tinted colourways."""
    hsv = cv2.cvtColor(layers.colour.astype(np.float32), cv2.COLOR_RGB2HSV)
    fill = layers.colour_alpha > 0.5
    return float(((hsv[..., 1] > 0.2) & fill).sum() / max(fill.sum(), 1))


def build_material(layers: Layers, style: PinStyle) -> Material:
    """Make the enamel-pin material for one rendered design.

    Thin OpenMoji outlines become raised metal lines; filled black details
    (eyes, dots) become black enamel, as on real pins; the rim follows the
    artwork outline.
    """
    size = layers.colour_alpha.shape[0]
    u = size / 512.0
    ink = ((np.maximum(layers.colour_alpha, layers.line_alpha) > 0.35) * 255).astype(np.uint8)
    shape = _solid_silhouette(ink, rim=max(2, round(7 * u)))
    line = ((layers.line_alpha > 0.5) * 255).astype(np.uint8)
    blobs = _drop_small(cv2.morphologyEx(line, cv2.MORPH_OPEN, _disk(round(10 * u))), 700 * u * u)
    strokes = cv2.erode(cv2.subtract(line, blobs), _disk(max(1, round(2 * u))))
    fill = (layers.colour_alpha > 0.5).astype(np.uint8) * 255
    enamel = cv2.bitwise_and(cv2.bitwise_or(fill, blobs), cv2.bitwise_not(strokes))
    enamel = cv2.erode(cv2.bitwise_and(enamel, cv2.erode(shape, _disk(round(5 * u)))), _disk(1))
    enamel_f = cv2.GaussianBlur(enamel.astype(np.float32) / 255, (0, 0), 0.7)

    base = _recolour(layers.colour, style)
    black = np.full(3, 0.07, np.float32)
    blob_f = (blobs > 0).astype(np.float32)[..., None]
    enamel_rgb = base * (1 - blob_f) + black * blob_f
    # Real enamel is slightly less saturated and never pure white.
    grey = enamel_rgb.mean(axis=2, keepdims=True)
    enamel_rgb = np.clip(0.92 * enamel_rgb + 0.08 * grey, 0.04, 0.93)

    tint = np.asarray(METALS[style.metal], np.float32)
    metal = (1.0 - enamel_f) * (shape > 0)
    albedo = enamel_rgb * enamel_f[..., None] + tint * metal[..., None]

    normal = _normals(shape, enamel, style.soft_enamel, u)
    alpha = cv2.GaussianBlur((shape > 0).astype(np.float32), (0, 0), 0.8)
    return Material(albedo.astype(np.float32), alpha, metal.astype(np.float32), normal, tint)


def _normals(shape: np.ndarray, enamel: np.ndarray, soft: bool, u: float) -> np.ndarray:
    """Surface normals from a height field: domed rim edge, raised lines, recessed enamel."""
    dist_out = cv2.distanceTransform(shape, cv2.DIST_L2, 5)
    dist_wall = cv2.distanceTransform(enamel, cv2.DIST_L2, 5)
    height = np.sqrt(np.clip(dist_out / (5 * u), 0, 1)) * 3.0
    recess = 1.4 if soft else 0.25
    e = enamel.astype(np.float32) / 255
    # Soft enamel forms a meniscus: it dips away from the metal walls.
    dip = (np.clip(dist_wall / (10 * u), 0, 1) ** 0.7) * (0.8 if soft else 0.1)
    height = height - e * (recess + dip)
    height = cv2.GaussianBlur(height.astype(np.float32), (0, 0), 1.1 * u)
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    n = np.dstack([-gx * 1.6 / u, -gy * 1.6 / u, np.ones_like(gx)])
    return (n / np.linalg.norm(n, axis=2, keepdims=True)).astype(np.float32)


def shade(mat: Material, light: Lighting) -> np.ndarray:
    """Light the material; returns float RGB (not premultiplied) in [0, 1+]."""
    n = mat.normal
    ld = np.asarray(light.direction, np.float32)
    ld = ld / np.linalg.norm(ld)
    half = ld + np.array([0, 0, 1], np.float32)
    half /= np.linalg.norm(half)
    ndl = np.clip(n @ ld, 0, 1).astype(np.float32)
    ndh = np.clip(n @ half, 0, 1).astype(np.float32)
    lc = np.asarray(light.colour, np.float32)

    # Metal reflects its surroundings: fake an environment from the reflected
    # direction (bright "ceiling", dark "table") plus a broad gradient across the pin.
    s = mat.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    rx, ry = 2 * n[..., 2] * n[..., 0], 2 * n[..., 2] * n[..., 1]
    c, si = np.cos(light.env_phase), np.sin(light.env_phase)
    env = 0.62 - 0.9 * (c * ry + si * rx) + 0.22 * np.sin(6.0 * (xx * c + yy * si) + light.env_phase)
    env = np.clip(env, 0.12, 1.35)
    # A point-like light glints on curved surfaces (bevels, domed enamel edges) only;
    # on the flat face a directional Blinn-Phong lobe would whiten the whole pin at
    # once (pale enamel, light-grey black nickel), which a phone never shows. Flat
    # reflections of lamps and windows come from the glare map instead.
    curved = np.clip((1.0 - n[..., 2]) * 12.0, 0.0, 1.0)[..., None]
    metal_rgb = mat.tint * (env[..., None] * 0.85 + 0.25 * ndl[..., None])
    metal_rgb = metal_rgb + curved * cv2.pow(ndh, 40)[..., None] * light.specular * 1.3 * (0.5 + 0.5 * mat.tint)

    diffuse = light.ambient + light.diffuse * ndl
    enamel_rgb = mat.albedo * diffuse[..., None] + curved * cv2.pow(ndh, 90)[..., None] * light.specular * 0.8
    # Glossy enamel also mirrors the room faintly, which keeps it from looking printed.
    enamel_rgb = enamel_rgb + (0.06 * (env - 0.6))[..., None]
    m = mat.metal[..., None]
    rgb = (enamel_rgb * (1 - m) + metal_rgb * m) * lc
    if light.glare is not None:
        g = light.glare[..., None]
        rgb = rgb + g * (1 - m) * lc + g * m * lc * (0.6 + 0.6 * mat.tint)
    return rgb.astype(np.float32)
