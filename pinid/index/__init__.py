"""The index directory: the ``PinIndex`` facade, building, the typed manifest and layout, storage and search."""

from .pin_index import PinIndex

__all__ = ["PinIndex"]
