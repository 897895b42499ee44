"""Fit the RootSIFT PCA that pinid ships (pinid/local/rootsift_pca.npy).

Usage: python scripts/fit_descriptor_pca.py CATALOGUE_DIR [-o pinid/local/rootsift_pca.npy] [--images N]

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
    parser.add_argument("-o", "--output", type=Path, default=Path("pinid/local/rootsift_pca.npy"))
    parser.add_argument("--images", type=int, default=None, help="use only the first N product shots")
    args = parser.parse_args()

    from pinid.images import load_image
    from pinid.local.features import reference_sift_descriptors, root_sift

    shots = sorted(args.catalogue.glob("*/*.png"))[:args.images]
    samples = [root_sift(reference_sift_descriptors(load_image(path))) for path in shots]
    data = np.concatenate(samples).astype(np.float64) if samples else np.zeros((0, 128))
    if len(data) < 128:
        raise SystemExit(f"{len(data)} descriptors from {len(shots)} product shots in {args.catalogue}: "
                         "a PCA of 128 dimensions needs at least 128")
    mean = data.mean(axis=0)
    _, singular, axes = np.linalg.svd(data - mean, full_matrices=False)
    variance = singular ** 2 / (singular ** 2).sum()
    table = np.vstack([mean, axes]).astype(np.float32)
    np.save(args.output, table, allow_pickle=False)
    projected = (data - mean) @ axes[:64].T
    print(f"{len(data)} descriptors from {len(shots)} product shots in {args.catalogue}; variance kept: "
          + ", ".join(f"{k} axes {variance[:k].sum():.3f}" for k in (32, 48, 64))
          + f"; projected range (64 axes) {projected.min():.3f} .. {projected.max():.3f}, "
            f"99.99th |value| {np.percentile(np.abs(projected), 99.99):.3f}; wrote {args.output}")


if __name__ == "__main__":
    main()
