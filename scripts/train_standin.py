"""Train a small, informative CLIP stand-in image model on simulated phone photos of other artwork.

Random weights carry no signal, so pinid's fusion of CLIP with local features
cannot be measured with them, and real CLIP weights cannot be downloaded here.
This script trains a small open_clip ``CLIP`` image tower, from scratch, to map
a simulated phone photo of a pin and the pin's catalogue shot to the same
embedding (InfoNCE, in-batch negatives), and writes it as a ``local-dir:``
checkpoint that pinid loads through its normal path::

    npm pack @svgmoji/noto && tar xzf svgmoji-noto-*.tgz   # package/sprites/all.svg
    python scripts/train_standin.py --artwork package/sprites/all.svg -o standin-model
    pinid build-index CATALOGUE --model local-dir:standin-model -o idx

The artwork must be disjoint from the benchmark's (which uses OpenMoji): the
default is Google's Noto emoji, one SVG sprite from ``npm pack @svgmoji/noto``
(nested ``<svg id="HEX">`` elements); a folder of .svg/.png/.jpg images works
too. Each artwork becomes an enamel pin (``pinid.synth.reference``), photographed
by the benchmark's simulator at small frame sizes; skin-tone variants are left
out (near duplicates would be each other's negatives). About 10% of the artworks
are held out, and the table printed before and after training gives top-1/top-5
photo -> catalogue-shot retrieval among them. The text tower is a minimal
untrained placeholder (open_clip's vocabulary, so its tokenizer's ids are
valid): text search with this model means nothing. It is a measuring device,
never a default and never shipped. Seeded: the same arguments give the same
weights on the same machine and thread count.
"""

from __future__ import annotations

import argparse
import io
import math
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SKIN_TONE = re.compile(r"1F3F[B-F]", re.IGNORECASE)  # Fitzpatrick modifiers U+1F3FB..U+1F3FF
IMAGE_SUFFIXES = (".svg", ".png", ".jpg", ".jpeg", ".webp")
_SVG_TAG = re.compile(r"<svg\b[^>]*>|</svg>")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", required=True, type=Path, help="checkpoint folder to write (local-dir: layout)")
    ap.add_argument("--artwork", required=True, type=Path,
                    help="an SVG sprite of nested <svg id=...> elements (Noto: package/sprites/all.svg of "
                         "`npm pack @svgmoji/noto`), or a folder of .svg/.png/.jpg images")
    ap.add_argument("--limit", type=int, default=0, help="use at most this many artworks (0: all)")
    ap.add_argument("--photos", type=int, default=6, help="simulated phone photos per artwork")
    ap.add_argument("--holdout", type=float, default=0.1, help="share of artworks held out for the table")
    ap.add_argument("--render", type=int, default=128, help="artwork and material side, px")
    ap.add_argument("--frame", default="160,256", help="photo frame long side, MIN,MAX px")
    ap.add_argument("--arch", choices=("vit", "resnet"), default="vit")
    ap.add_argument("--image-size", type=int, default=96, help="model input side, px")
    ap.add_argument("--width", type=int, default=128, help="vision width (vit: token width; resnet: stem width)")
    ap.add_argument("--layers", default="4",
                    help="vit: number of transformer layers; resnet: blocks per stage A,B,C,D")
    ap.add_argument("--patch", type=int, default=12, help="vit patch size")
    ap.add_argument("--embed-dim", type=int, default=128)
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--batch", type=int, default=64, help="artworks per step (each: one photo + its catalogue shot)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--workers", type=int, default=1, help="processes simulating photos")
    ap.add_argument("--data-cache", type=Path, default=None,
                    help="an .npz of the simulated data: read if it was made with the same settings, else written")
    ap.add_argument("--log-every", type=int, default=100)
    args = ap.parse_args(argv)
    try:
        args.frame = tuple(int(v) for v in args.frame.split(","))
        args.layers = tuple(int(v) for v in args.layers.split(","))
    except ValueError:
        ap.error("--frame and --layers take comma-separated integers")
    if len(args.frame) != 2 or not 0 < args.frame[0] <= args.frame[1]:
        ap.error("--frame takes MIN,MAX with 0 < MIN <= MAX")
    if args.arch == "resnet" and len(args.layers) != 4:
        ap.error("--layers for resnet takes four integers")
    if args.arch == "vit" and len(args.layers) != 1:
        ap.error("--layers for vit takes one integer")
    if args.arch == "resnet" and args.image_size % 32:
        ap.error("--image-size must be a multiple of 32 for resnet")
    if args.arch == "vit" and args.image_size % args.patch:
        ap.error("--image-size must be a multiple of --patch for vit")
    if args.photos < 1 or args.steps < 0 or args.batch < 2 or not 0 < args.holdout < 1:
        ap.error("need --photos >= 1, --steps >= 0, --batch >= 2 and 0 < --holdout < 1")
    return args


# ---------------------------------------------------------------- artwork

def list_artwork(path: str) -> list[tuple[str, str, str]]:
    """(name, kind, source) per artwork: kind "svg" (source: the SVG text) or "file" (source: a path)."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return [(p.stem, "svg", p.read_text(encoding="utf-8")) if p.suffix.lower() == ".svg"
                else (p.stem, "file", str(p)) for p in files]
    if not root.is_file():
        sys.exit(f"train_standin: --artwork {path} is neither a file nor a folder")
    return split_sprite(root.read_text(encoding="utf-8"))


def split_sprite(text: str) -> list[tuple[str, str, str]]:
    """The nested ``<svg id="...">`` elements of a sprite, each as a standalone SVG document."""
    found, depth, start = [], 0, 0
    for m in _SVG_TAG.finditer(text):
        if m.group().startswith("</"):
            depth -= 1
            if depth == 1:
                found.append(text[start:m.end()])
        else:
            depth += 1
            if depth == 2:
                start = m.start()
    out = []
    for svg in found:
        head = svg[:svg.index(">")]
        name = re.search(r'\bid="([^"]+)"', head)
        if "xlink:" in svg and "xmlns:xlink" not in head:
            svg = svg.replace("<svg", '<svg xmlns:xlink="http://www.w3.org/1999/xlink"', 1)
        if "xmlns=" not in head:
            svg = svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
        out.append((name.group(1) if name else f"svg{len(out):05d}", "svg", svg))
    return out


def load_rgba(kind: str, source: str, side: int) -> np.ndarray:
    """The artwork as a ``side`` x ``side`` RGBA uint8 image (aspect kept, transparent margin)."""
    from PIL import Image

    if kind == "svg":
        import cairosvg

        img = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=source.encode("utf-8"), output_width=side,
                                                     output_height=side)))
    else:
        img = Image.open(source)
    img = img.convert("RGBA")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return np.asarray(canvas)


# ---------------------------------------------------------------- simulation

def model_input(data: bytes, size: int) -> np.ndarray:
    """Encoded image -> uint8 (size, size, 3), as pinid's encoder sees it: shortest side resized, centre crop."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def simulate(job: tuple[int, str, str, dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """One artwork's catalogue shot and phone photos at model input size; None if it does not render."""
    import cv2

    from pinid.synth.reference import material_from_image
    from pinid.synth.scenes import QueryOptions, catalogue_image, query_photo

    cv2.setNumThreads(1)
    index, kind, source, cfg = job
    try:
        rgba = load_rgba(kind, source, cfg["render"])
    except Exception:  # a malformed SVG or image file: skip it, the run goes on (counted in the log)
        return None
    mask = rgba[..., 3] > 127 if rgba[..., 3].min() < 255 else None
    if mask is not None and mask.sum() < 16:
        return None
    mat = material_from_image(np.ascontiguousarray(rgba[..., :3]), mask, size=cfg["render"])
    rng = np.random.default_rng([cfg["seed"], index])
    size = cfg["image_size"]
    catalogue = model_input(catalogue_image(mat, rng, size=max(size, 160)), size)
    opts = QueryOptions(long_side=tuple(cfg["frame"]))
    photos = np.stack([model_input(query_photo(mat, rng, opts=opts)[0], size) for _ in range(cfg["photos"])])
    return catalogue, photos


def make_data(args: argparse.Namespace) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, catalogue shots (N, S, S, 3), photos (N, P, S, S, 3)), uint8, from the cache when it matches."""
    cfg = {"artwork": str(Path(args.artwork).resolve()), "limit": args.limit, "photos": args.photos,
           "render": args.render, "frame": list(args.frame), "image_size": args.image_size, "seed": args.seed}
    if args.data_cache and args.data_cache.is_file():
        with np.load(args.data_cache, allow_pickle=False) as cached:
            if str(cached["cfg"]) == repr(sorted(cfg.items())):
                print(f"data: {args.data_cache} ({len(cached['names'])} artworks)", flush=True)
                return [str(n) for n in cached["names"]], cached["catalogue"], cached["photos"]
        print(f"data: {args.data_cache} was made with other settings; simulating anew", flush=True)
    art = [a for a in list_artwork(args.artwork) if not SKIN_TONE.search(a[0])]
    if args.limit:
        art = art[:args.limit]
    jobs = [(i, kind, source, cfg) for i, (_, kind, source) in enumerate(art)]
    started, results = time.monotonic(), []
    if args.workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            for done, result in enumerate(pool.imap(simulate, jobs, chunksize=8), 1):
                results.append(result)
                _progress(done, len(jobs), started)
    else:
        for done, job in enumerate(jobs, 1):
            results.append(simulate(job))
            _progress(done, len(jobs), started)
    keep = [i for i, r in enumerate(results) if r is not None]
    if len(keep) < 3:
        sys.exit(f"train_standin: only {len(keep)} of {len(art)} artworks rendered; need 3 or more")
    names = [art[i][0] for i in keep]
    catalogue = np.stack([results[i][0] for i in keep])
    photos = np.stack([results[i][1] for i in keep])
    print(f"data: {len(keep)} artworks ({len(art) - len(keep)} skipped), {photos.shape[1]} photos each, "
          f"{time.monotonic() - started:.0f} s", flush=True)
    if args.data_cache:
        args.data_cache.parent.mkdir(parents=True, exist_ok=True)
        partial = args.data_cache.with_name(args.data_cache.name + ".partial.npz")
        np.savez(partial, cfg=np.array(repr(sorted(cfg.items()))), names=np.array(names), catalogue=catalogue,
                 photos=photos)
        partial.replace(args.data_cache)
    return names, catalogue, photos


def _progress(done: int, total: int, started: float) -> None:
    if done == total or done % 200 == 0:
        print(f"  simulated {done}/{total} artworks, {time.monotonic() - started:.0f} s", flush=True)


# ---------------------------------------------------------------- model

def model_config(args: argparse.Namespace) -> dict[str, Any]:
    if args.arch == "resnet":
        vision = {"image_size": args.image_size, "layers": list(args.layers), "width": args.width,
                  "head_width": min(64, args.width * 32)}
    else:
        vision = {"image_size": args.image_size, "layers": args.layers[0], "width": args.width,
                  "patch_size": args.patch, "head_width": min(64, args.width)}
    # The text tower is a placeholder: never trained; the full vocabulary keeps tokenizer ids valid.
    text = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    return {"embed_dim": args.embed_dim, "vision_cfg": vision, "text_cfg": text}


class Normalise:
    """uint8 NHWC numpy -> normalised float NCHW tensor, with the mean and std pinid's preprocessing uses."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        import torch

        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, images: np.ndarray) -> Any:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std


def augment(x: Any, gen: Any, strength: float) -> Any:
    """Cheap photometric and framing jitter on a normalised batch (colours' hues are kept: they identify pins)."""
    import torch

    n = x.shape[0]
    gain = 1 + strength * 0.25 * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    bias = strength * 0.25 * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    x = x * gain + bias
    pad = max(1, int(round(0.06 * x.shape[-1] * strength)))
    shifts = torch.randint(-pad, pad + 1, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=shifts, dims=(2, 3))


def embed(visual: Any, images: np.ndarray, norm: Normalise, batch: int = 256) -> np.ndarray:
    import torch

    visual.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            out.append(torch.nn.functional.normalize(visual(norm(images[i:i + batch])).float(), dim=-1))
    return torch.cat(out).numpy()


def retrieval(photo_emb: np.ndarray, catalogue_emb: np.ndarray, photos_per: int) -> dict[str, float]:
    """Top-1/top-5 of each photo's own catalogue shot among all held-out shots, and the mean cosine gap."""
    sims = photo_emb @ catalogue_emb.T
    truth = np.repeat(np.arange(len(catalogue_emb)), photos_per)
    own = sims[np.arange(len(truth)), truth]
    rank = (sims > own[:, None]).sum(axis=1)
    masked = sims.copy()
    masked[np.arange(len(truth)), truth] = -np.inf
    return {"top1": float((rank == 0).mean()), "top5": float((rank < 5).mean()),
            "margin": float((own - masked.max(axis=1)).mean())}


def train(args: argparse.Namespace) -> None:
    import open_clip
    import torch
    from open_clip.transform import PreprocessCfg

    from pinid.encoder import Encoder
    from pinid.encoder.weights import check_export_folder, write_local_dir

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    check_export_folder(args.out)  # fail before minutes of work, not after
    started = time.monotonic()
    names, catalogue, photos = make_data(args)
    n, per = photos.shape[:2]
    order = np.random.default_rng([args.seed, 1]).permutation(n)
    if n < 4:
        sys.exit(f"train_standin: {n} artworks; need 4 or more (2 held out, 2 to train on)")
    held = np.sort(order[:min(n - 2, max(2, int(round(args.holdout * n))))])
    train_ids = np.sort(order[len(held):])
    batch = min(args.batch, len(train_ids))

    model_cfg = model_config(args)
    preprocess_cfg = asdict(PreprocessCfg(size=args.image_size))
    clip = open_clip.CLIP(**model_cfg)
    visual = clip.visual
    norm = Normalise(preprocess_cfg["mean"], preprocess_cfg["std"])
    held_photos = photos[held].reshape(-1, *photos.shape[2:])
    params = sum(p.numel() for p in visual.parameters())
    print(f"model: {args.arch} {model_cfg['vision_cfg']}, embed {args.embed_dim}, {params / 1e6:.2f} M image "
          f"parameters; {len(train_ids)} artworks to train on, {len(held)} held out; "
          f"{args.steps} steps of {batch}", flush=True)
    before = retrieval(embed(visual, held_photos, norm), embed(visual, catalogue[held], norm), per)

    decay = [p for name, p in visual.named_parameters() if p.ndim >= 2 and "positional" not in name]
    rest = [p for name, p in visual.named_parameters() if not (p.ndim >= 2 and "positional" not in name)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": rest + [clip.logit_scale], "weight_decay": 0.0}], lr=args.lr)
    warmup = max(1, args.steps // 20)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng([args.seed, 2])
    t0, running = time.monotonic(), []
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / max(1, args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        ids = train_ids[rng.choice(len(train_ids), batch, replace=False)]
        shots = photos[ids, rng.integers(per, size=batch)]
        x = torch.cat([augment(norm(shots), gen, 1.0), augment(norm(catalogue[ids]), gen, 0.3)])
        visual.train()
        z = torch.nn.functional.normalize(visual(x), dim=-1)
        logits = clip.logit_scale.exp().clamp(max=100) * z[:batch] @ z[batch:].T
        target = torch.arange(batch)
        loss = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                      + torch.nn.functional.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(f"  step {step + 1}/{args.steps} loss {np.mean(running):.3f} lr {lr:.2e} "
                  f"{(time.monotonic() - t0) / (step + 1):.2f} s/step", flush=True)
            running = []
    train_s = time.monotonic() - t0

    folder = write_local_dir(args.out, clip, model_cfg, preprocess_cfg)
    encoder = Encoder.load(f"local-dir:{folder}", device="cpu", offline=True)  # the path pinid itself uses
    loaded_norm = Normalise(encoder.preprocess_cfg["mean"], encoder.preprocess_cfg["std"])

    def encode(images: np.ndarray) -> np.ndarray:
        return np.concatenate([encoder.encode_tensors(loaded_norm(images[i:i + 256]))
                               for i in range(0, len(images), 256)])

    after = retrieval(encode(held_photos), encode(catalogue[held]), per)
    print(f"\nwrote {folder} (load with --model local-dir:{folder}); training {train_s:.0f} s, "
          f"total {time.monotonic() - started:.0f} s\n")
    print(f"held-out retrieval: {len(held)} artworks never trained on, {len(held) * per} phone photos, "
          f"each against all {len(held)} catalogue shots (chance top-1 {1 / len(held):.3f})\n")
    print("| model | top-1 | top-5 | mean margin |")
    print("| --- | --- | --- | --- |")
    for label, row in (("before training (random init)", before),
                       (f"after {args.steps} steps (saved checkpoint, Encoder.load)", after)):
        print(f"| {label} | {row['top1']:.3f} | {row['top5']:.3f} | {row['margin']:+.3f} |")


def main(argv: Sequence[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
