"""Exception hierarchy: every failure a user can cause is a ``PinidError``.

Each class carries the process exit code the CLI uses, so scripts calling
``pinid`` can tell a bad photo from a broken index without parsing text.
"""

from __future__ import annotations


class PinidError(Exception):
    """Base class for errors caused by input, data or environment (not bugs)."""

    exit_code = 1


class InputError(PinidError):
    """A path or argument given by the user is wrong (missing file, bad value)."""

    exit_code = 2


class LocalOnlyError(InputError):
    """CLIP search (``--no-verify``, ``dedup --against``, ``--model``) was asked of an index built with
    local features only (``--encoder local``)."""


class ImageError(PinidError):
    """An image file cannot be decoded (corrupt, truncated, not an image, too large).

    ``path`` names the image as the user gave it and ``reason`` says why in a
    few words, so callers can list skipped files without parsing the message.
    """

    exit_code = 3

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # type: ignore[no-untyped-def]  # keep it picklable for process pools
        return (type(self), (self.path, self.reason))


class CatalogueError(PinidError):
    """A catalogue is empty or malformed."""

    exit_code = 4


class IndexFormatError(PinidError):
    """An index directory is missing, damaged, or of an unsupported format version."""

    exit_code = 5


class EncoderMismatchError(PinidError):
    """An index is queried with a different encoder than the one that built it."""

    exit_code = 6


class WeightsUnavailableError(PinidError):
    """Model weights cannot be found locally and cannot be downloaded."""

    exit_code = 7


class ClusterError(PinidError):
    """A job on a Ray cluster failed (a worker kept failing, or the cluster went away).

    What finished before the failure is in the cache, so running the same
    command again resumes from there.
    """

    exit_code = 8
