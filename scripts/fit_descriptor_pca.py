"""Fit the RootSIFT PCA that pinid ships (pinid/rootsift_pca.npy).

Usage: python scripts/fit_descriptor_pca.py CATALOGUE_DIR [-o pinid/rootsift_pca.npy]

Takes SIFT descriptors from every simulated view (light and dark backdrop) of
every product shot in CATALOGUE_DIR (one sub-folder per pin), square-roots
them (RootSIFT) and writes a (129, 128) float32 array: the mean, then all 128
principal axes, strongest first. Fit it on a catalogue that no reported figure
is measured on (the shipped one: `make_benchmark.py --size small --seed 7`).
Prints the share of variance the first 32/48/64 axes keep and the range of
the projected values (which CODE_SCALE must fit into uint8).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("catalogue", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=Path("pinid/rootsift_pca.npy"))
    args = parser.parse_args()

    import cv2

    from pinid.images import load_image
    from pinid.local.features import _on_dark_backdrop, _sift, _views, root_sift

    samples = []
    for path in sorted(args.catalogue.glob("*/*.png")):
        image = load_image(path)
        for shot in (image, _on_dark_backdrop(image)):
            grey = np.asarray(shot.convert("L"))
            height, width = grey.shape
            for affine, side in _views(width, height):
                warped = cv2.warpAffine(grey, affine[:2], (width, height), borderMode=cv2.BORDER_REPLICATE)
                scale = min(1.0, side / max(width, height))
                view = cv2.resize(warped, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                samples.append(root_sift(_sift(view)[2]))
    data = np.concatenate(samples).astype(np.float64)
    mean = data.mean(axis=0)
    _, singular, axes = np.linalg.svd(data - mean, full_matrices=False)
    variance = singular ** 2 / (singular ** 2).sum()
    table = np.vstack([mean, axes]).astype(np.float32)
    np.save(args.output, table, allow_pickle=False)
    projected = (data - mean) @ axes[:64].T
    print(f"{len(data)} descriptors from {args.catalogue}; variance kept: "
          + ", ".join(f"{k} axes {variance[:k].sum():.3f}" for k in (32, 48, 64))
          + f"; projected range (64 axes) {projected.min():.3f} .. {projected.max():.3f}, "
            f"99.99th |value| {np.percentile(np.abs(projected), 99.99):.3f}; wrote {args.output}")


if __name__ == "__main__":
    main()
