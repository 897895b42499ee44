"""pinid: which pin is this? Identify enamel pins from photos.

The whole public API fits on one screen::

    from pinid import Encoder, PinIndex, read_catalogue

    encoder = Encoder.load()                      # ViT-B-32-256 / datacomp_s34b_b86k
    index = PinIndex.build(read_catalogue("pins/"), "pins.index", encoder)
    index = PinIndex.load("pins.index")           # later: loads the encoder it was built with
    answer = index.identify("photo.jpg", k=5)     # verified by geometry and colour
    print("unknown pin" if answer.unknown else answer.matches[0].name, answer.confidence)
    for found in index.identify_multi("board.jpg"):  # every pin on a board, with its outline
        print(found.match.pin_id, found.confidence, found.polygon)

``pinid build-index --encoder local`` (``PinIndex.build(..., encoder=None)``)
makes an index that needs no model weights at all. Importing pinid loads no
model and does no work; torch, FAISS and OpenCV are imported when first used.
"""

from __future__ import annotations

from ._version import __version__
from .catalogue import Catalogue, PinRecord, read_catalogue
from .encoder import Encoder, EncoderSpec
from .errors import PinidError
from .images import load_image
from .index import PinIndex
from .results import Found, Identification, Match

__all__ = [
    "Catalogue",
    "Encoder",
    "EncoderSpec",
    "Found",
    "Identification",
    "Match",
    "PinIndex",
    "PinRecord",
    "PinidError",
    "load_image",
    "read_catalogue",
    "__version__",
]
