"""Contact sheets of failed queries, for a person to look at.

One row per failure: the query photo, a reference image of the pin it shows,
and a reference image of the pin pinid returned, each captioned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..errors import ImageError
from ..images import load_image
from ..index import PinIndex
from .queries import QueryOutcome

THUMB = 256
CAPTION = 34
ROWS_PER_SHEET = 8


def failed_outcomes(outcomes: Sequence[QueryOutcome], threshold: float | None = None) -> list[QueryOutcome]:
    """Known queries not answered at rank 1, and unknown ones accepted at ``threshold``."""
    failed = [o for o in outcomes if o.query.is_known and o.rank != 1]
    if threshold is not None:
        failed += [o for o in outcomes if not o.query.is_known and o.top_score >= threshold]
    return failed


def write_failure_sheets(outcomes: Sequence[QueryOutcome], index: PinIndex, out_dir: str | Path, *,
                         limit: int = 200) -> list[Path]:
    """Write PNG sheets of up to ``limit`` failures to ``out_dir``; returns their paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [_row(outcome, index) for outcome in outcomes[:limit]]
    written = []
    for number, start in enumerate(range(0, len(rows), ROWS_PER_SHEET), start=1):
        chunk = rows[start:start + ROWS_PER_SHEET]
        sheet = Image.new("RGB", (3 * THUMB, len(chunk) * (THUMB + CAPTION)), "white")
        for i, row in enumerate(chunk):
            sheet.paste(row, (0, i * (THUMB + CAPTION)))
        path = folder / f"failures-{number:03d}.png"
        sheet.save(path)
        written.append(path)
    return written


def _row(outcome: QueryOutcome, index: PinIndex) -> Image.Image:
    query = outcome.query
    expected = index.reference_images(query.pin_id) if query.pin_id else []
    returned = outcome.matches[0] if outcome.matches else None
    cells = [
        (query.image, f"query {query.query_id} ({query.split})"),
        (expected[0] if expected else None, f"expected {query.pin_id or 'unknown pin'}"),
        (returned.reference_image if returned else None,
         f"returned {returned.pin_id} {returned.score:.3f}" if returned else "no answer"),
    ]
    row = Image.new("RGB", (3 * THUMB, THUMB + CAPTION), "white")
    draw = ImageDraw.Draw(row)
    font = ImageFont.load_default(size=15)
    for column, (path, caption) in enumerate(cells):
        row.paste(_thumbnail(path), (column * THUMB, 0))
        draw.text((column * THUMB + 6, THUMB + 4), caption[:40], fill="black", font=font)
        colour = "green" if column == 1 else ("red" if column == 2 else "grey")
        draw.rectangle([column * THUMB, 0, (column + 1) * THUMB - 1, THUMB - 1], outline=colour, width=3)
    return row


def _thumbnail(path: str | Path | None) -> Image.Image:
    cell = Image.new("RGB", (THUMB, THUMB), (235, 235, 235))
    if path is None:
        return cell
    try:
        image = load_image(path, min_side=THUMB)
    except ImageError:
        ImageDraw.Draw(cell).text((10, THUMB // 2), "unreadable", fill="red")
        return cell
    scale = THUMB / max(image.size)  # small catalogue images are enlarged too
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    cell.paste(image, ((THUMB - image.width) // 2, (THUMB - image.height) // 2))
    return cell
