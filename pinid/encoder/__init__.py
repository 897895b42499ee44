"""CLIP image encoding: which weights (``weights``), the encoder (``clip``), the content-keyed cache (``cache``)."""

from .clip import EncodeResult, Encoder
from .weights import DEFAULT_MODEL, DEFAULT_PRETRAINED, EncoderSpec, save_local_dir

__all__ = ["DEFAULT_MODEL", "DEFAULT_PRETRAINED", "EncodeResult", "Encoder", "EncoderSpec", "save_local_dir"]
