"""Prompt adherence of generated shape images, measured by image analysis against the ground truth
of the toy generator (distill/toy/shapes.py).

Every pixel is given the nearest named colour; the background is the most common colour; each
named object is the largest connected region of its colour, and its shape is read from how much
of its bounding box it fills (square ~1.0, circle ~0.79, upright triangle ~0.5). The headline
number, `adherence`, is the share of named objects found with the named colour and shape. The
background colour, the relation between two objects and whole prompts (everything right) are
reported beside it.

Usage: python -m distill.eval_adherence --model DIR [--steps 1] [--guidance 0] [--count 200]
"""
import argparse
import json
import sys

import cv2
import numpy as np

from distill.toy import shapes

PALETTE = np.array(list(shapes.COLOURS.values()), np.float32)  # (K, 3)
NAMES = list(shapes.COLOURS)
MAX_COLOUR_DISTANCE = 110.0  # farther than this from every named colour: no colour at all
MIN_AREA_FRACTION = 0.015    # an object smaller than 1.5% of the image is not counted as drawn
SQUARE_FILL, CIRCLE_FILL = 0.86, 0.66  # bounding-box fill thresholds between the three shapes


def label_image(rgb):
    """Index of the nearest named colour per pixel, -1 where none is near: (H, W) int."""
    px = rgb.reshape(-1, 3).astype(np.float32)
    d = ((px[:, None, :] - PALETTE[None]) ** 2).sum(-1)
    lab = d.argmin(1)
    lab[d.min(1) > MAX_COLOUR_DISTANCE ** 2] = -1
    return lab.reshape(rgb.shape[:2])


def classify_shape(mask):
    """'square', 'circle' or 'triangle' for a binary region (H, W) uint8, from its fill ratio."""
    ys, xs = np.nonzero(mask)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = len(ys) / float(h * w)
    if fill >= SQUARE_FILL:
        return "square"
    return "circle" if fill >= CIRCLE_FILL else "triangle"


def find_object(labels, colour):
    """The largest 8-connected region of a colour: (mask uint8 (H, W), centroid (x, y)) or None
    when the region is missing or too small."""
    mask = (labels == NAMES.index(colour)).astype(np.uint8)
    n, comp, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < MIN_AREA_FRACTION * labels.size:
        return None
    return (comp == best).astype(np.uint8), cents[best]


def relation_holds(relation, a, b):
    """Whether centroid a stands in `relation` to centroid b: displaced the right way along the
    relation's axis, and more along that axis than across it."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    along, across = {"above": (dy, dx), "below": (-dy, dx), "left of": (dx, dy),
                     "right of": (-dx, dy)}[relation]
    return along > 0 and along >= abs(across)


def analyse(rgb, spec):
    """Checks one image (H, W, 3) uint8 against its scene spec: a dict with background_ok,
    objects_ok (one bool per named object), found_shapes, relation_ok (None for one object)."""
    labels = label_image(rgb)
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(NAMES))
    background_ok = NAMES[int(counts.argmax())] == spec["background"]
    objects_ok, found, cents = [], [], []
    for o in spec["objects"]:
        hit = find_object(labels, o["colour"])
        shape = None if hit is None else classify_shape(hit[0])
        found.append(shape)
        cents.append(None if hit is None else hit[1])
        objects_ok.append(shape == o["shape"])
    relation_ok = None
    if spec.get("relation"):
        relation_ok = (cents[0] is not None and cents[1] is not None
                       and relation_holds(spec["relation"], cents[0], cents[1]))
    return {"background_ok": bool(background_ok), "objects_ok": objects_ok,
            "found_shapes": found, "relation_ok": relation_ok}


def summarise(results):
    """Aggregate numbers over analyse() results (all in [0, 1])."""
    objs = [ok for r in results for ok in r["objects_ok"]]
    rels = [r["relation_ok"] for r in results if r["relation_ok"] is not None]
    prompt_ok = [r["background_ok"] and all(r["objects_ok"]) and r["relation_ok"] is not False
                 for r in results]
    return {
        "images": len(results),
        "adherence": float(np.mean(objs)),
        "background": float(np.mean([r["background_ok"] for r in results])),
        "relation": float(np.mean(rels)) if rels else None,
        "whole_prompt": float(np.mean(prompt_ok)),
    }


def eval_specs(count, size, seed=1_000_003):
    """The held-out evaluation scenes: drawn from a seed the training set never uses."""
    specs, captions, images = shapes.make_set(seed, count, size)
    return specs, captions, images


def generate_pipeline(pipe, prompts, seeds, steps, guidance, batch=16):
    """Images (N, H, W, 3) uint8 from a diffusers pipeline, one CPU generator seed per image."""
    import torch
    out = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i:i + batch]]
        res = pipe(prompts[i:i + batch], num_inference_steps=steps, guidance_scale=guidance,
                   generator=gens, output_type="np")
        out.append((res.images * 255).round().clip(0, 255).astype(np.uint8))
    return np.concatenate(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="diffusers folder (StableDiffusionPipeline)")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--guidance", type=float, default=0.0)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch
    from diffusers import StableDiffusionPipeline
    torch.set_num_threads(args.threads)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    specs, prompts, _ = eval_specs(args.count, size)
    images = generate_pipeline(pipe, prompts, list(range(args.count)), args.steps, args.guidance)
    summary = summarise([analyse(img, s) for img, s in zip(images, specs)])
    json.dump(summary, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
