"""Alignment from the pin's outline alone, for plain pins that give SIFT nothing to match.

A flat pin with a plain face (a hexagon, a flag, a smiley) has too few
keypoints for verification to align it, but its outline is distinctive and
survives what a photo does to it. Normalised by its own second moments
(centred, and "whitened": the covariance of its pixels made the identity), a
silhouette seen under any affine map (turn, scale, tilt) is the reference's
whitened silhouette turned or mirrored (Rothe et al. 1996, affine moment
normalisation). So the photo's salient region and a reference's silhouette
are each sampled on a polar grid in their whitened frames; one circular
cross-correlation over the angle finds the turn (and another the mirrored
turn), and each turn gives one reference -> photo map. Nothing here says the
map is right: the caller asks the structure agreement
(``pinid.local.verify.structure_agreement``: do the photo's edges follow the
reference's?), which chance maps fail.

Pure functions on masks; no state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POLAR_RADII, POLAR_ANGLES = 8, 72  # polar grid of a whitened silhouette: radial rings, 5-degree steps
_MAX_RADIUS = 2.5  # whitened units: a disc reaches 2.0, a square's corners 2.45
_MIN_PIXELS = 12
_RING_WEIGHTS = (np.arange(POLAR_RADII, dtype=np.float32) + 0.5)[:, None]  # a ring's cells grow with its radius
_MIRRORED = (POLAR_ANGLES // 2 - np.arange(POLAR_ANGLES)) % POLAR_ANGLES  # angle phi -> 180 degrees - phi


@dataclass(frozen=True)
class Silhouette:
    """A pin's outline in its moment frame: where it is, its affine shape, and its whitened polar occupancy."""

    centre: np.ndarray  # (2,) image pixels
    shape: np.ndarray  # (2, 2) square root of the pixels' covariance: whitened units -> image pixels
    signature: np.ndarray  # (POLAR_RADII, POLAR_ANGLES) float32, 1 inside the silhouette, 0 outside


def silhouette(mask: np.ndarray, to_pixels: np.ndarray) -> Silhouette | None:
    """The silhouette of a binary ``mask`` whose pixel (column, row) lies at ``to_pixels`` (3 x 3, affine)
    applied to it in image pixels; None when the mask is too small or a line."""
    mask = np.asarray(mask) > 0
    rows, columns = np.nonzero(mask)
    if len(rows) < _MIN_PIXELS:
        return None
    points = np.c_[columns, rows, np.ones(len(rows))] @ np.asarray(to_pixels, np.float64)[:2].T
    centre = points.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(points.T))
    if values.min() <= 1e-6 * max(values.max(), 1e-12):
        return None
    shape = vectors @ np.diag(np.sqrt(values)) @ vectors.T
    # the polar grid's sample points, whitened -> image pixels -> mask pixels (nearest)
    radii = (np.arange(POLAR_RADII) + 0.5) * (_MAX_RADIUS / POLAR_RADII)
    angles = np.arange(POLAR_ANGLES) * (2.0 * np.pi / POLAR_ANGLES)
    whitened = np.stack([np.outer(radii, np.cos(angles)), np.outer(radii, np.sin(angles))], axis=-1)
    in_image = whitened @ shape.T + centre
    to_mask = np.linalg.inv(np.asarray(to_pixels, np.float64))
    in_mask = in_image @ to_mask[:2, :2].T + to_mask[:2, 2]
    column = np.rint(in_mask[..., 0]).astype(np.int64)
    row = np.rint(in_mask[..., 1]).astype(np.int64)
    inside = (column >= 0) & (column < mask.shape[1]) & (row >= 0) & (row < mask.shape[0])
    signature = np.zeros((POLAR_RADII, POLAR_ANGLES), np.float32)
    signature[inside] = mask[row[inside], column[inside]]
    return Silhouette(centre, shape, signature)


def outline_maps(photo: Silhouette, reference: Silhouette, *, peaks: int = 2) -> list[tuple[float, np.ndarray]]:
    """(overlap, reference -> photo map (3 x 3)) of the best turns, as taken and mirrored, best first.

    Overlap is the Dice coefficient of the two whitened silhouettes at that
    turn, each polar cell counted by its area; ``peaks`` turns (local maxima
    of the overlap, best first) are kept for each of the two orientations.
    """
    seen = photo.signature * _RING_WEIGHTS
    total = float(seen.sum())
    found: list[tuple[float, np.ndarray]] = []
    for mirrored in (False, True):
        signature = reference.signature
        if mirrored:  # the silhouette mirrored left-right in its frame
            signature = signature[:, _MIRRORED]
        # overlap[k] = sum_j seen[j + k] * reference[j]: the photo is the reference turned by k steps
        overlap = np.fft.irfft(np.fft.rfft(seen, axis=1) * np.conj(np.fft.rfft(signature, axis=1)),
                               n=POLAR_ANGLES, axis=1).sum(axis=0)
        dice = 2.0 * overlap / max(total + float((signature * _RING_WEIGHTS).sum()), 1e-9)
        local = (dice >= np.roll(dice, 1)) & (dice >= np.roll(dice, -1))
        for step in sorted(np.flatnonzero(local).tolist(), key=lambda k: -dice[k])[:peaks]:
            found.append((float(dice[step]), _map(photo, reference, step * 2.0 * np.pi / POLAR_ANGLES, mirrored)))
    found.sort(key=lambda item: -item[0])
    return found


class OutlineBank:
    """Many silhouettes' signatures, ready to be overlapped with one photo's at every turn at once.

    What ``outline_maps`` finds for one reference (the Dice overlap at the best
    turn, as taken or mirrored), for a whole catalogue in one product of
    spectra: an affine-invariant likeness of outlines that ranks candidates
    (``pinid.local.glance``). Keeps each signature's angular spectrum, 8 x 37
    complex numbers (2.4 KB an image); a mirrored signature's spectrum is the
    same one conjugated with every odd harmonic's sign turned, so it is not kept.
    """

    def __init__(self, signatures: np.ndarray) -> None:
        signatures = np.asarray(signatures, np.float32).reshape(-1, POLAR_RADII, POLAR_ANGLES)
        self.totals = (signatures * _RING_WEIGHTS).sum(axis=(1, 2))  # each cell counted by its area, once
        self.spectra = np.fft.rfft(signatures, axis=2).astype(np.complex64)

    def __len__(self) -> int:
        return len(self.totals)

    def overlaps(self, photo: Silhouette) -> np.ndarray:
        """(N,) Dice overlap of the photo's silhouette with each, at its best turn as taken or mirrored."""
        if not len(self):
            return np.zeros(0, np.float32)
        seen = photo.signature * _RING_WEIGHTS
        spectrum = np.fft.rfft(seen, axis=1).astype(np.complex64)
        # sum over rings before the inverse transform (it is linear): overlap[k] = sum_j seen[j + k] * ref[j]
        taken = np.einsum("rf,nrf->nf", spectrum, np.conj(self.spectra))
        # mirrored[j] = signature[(A/2 - j) mod A] has spectrum (-1)^f conj(spectrum[f]): its conjugate is
        # (-1)^f spectrum[f]
        signs = np.where(np.arange(self.spectra.shape[2]) % 2, -1.0, 1.0).astype(np.float32)
        mirrored = np.einsum("rf,nrf->nf", spectrum, self.spectra) * signs
        best = np.maximum(np.fft.irfft(taken, n=POLAR_ANGLES, axis=1).max(axis=1),
                          np.fft.irfft(mirrored, n=POLAR_ANGLES, axis=1).max(axis=1))
        return (2.0 * best / np.maximum(float(seen.sum()) + self.totals, 1e-9)).astype(np.float32)


def _map(photo: Silhouette, reference: Silhouette, turn: float, mirrored: bool) -> np.ndarray:
    """photo pixels = photo centre + photo shape . turn . mirror . reference shape^-1 . (reference - its centre)."""
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    mirror = np.diag([-1.0, 1.0]) if mirrored else np.eye(2)
    linear = photo.shape @ rotation @ mirror @ np.linalg.inv(reference.shape)
    return np.vstack([np.c_[linear, photo.centre - linear @ reference.centre], [0.0, 0.0, 1.0]])


__all__ = ["Silhouette", "silhouette", "outline_maps", "OutlineBank", "POLAR_RADII", "POLAR_ANGLES"]
