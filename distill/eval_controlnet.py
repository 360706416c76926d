"""How closely ControlNet outputs follow their control edges.

For held-out scenes of the toy generator, the control image is the Canny edge map of the true
scene (cv2.Canny on the RGB array, 100/200, as the engine's canny mode makes it) and the prompt is
the scene's caption. The generated image's own Canny edges are compared with the control's with a
one-pixel tolerance: precision (generated edges near a control edge), recall (control edges near
a generated edge) and their harmonic mean, the `edge_f1` overlap score. The same prompts and
seeds without the ControlNet give the chance level the score is compared against.

Usage: python -m distill.eval_controlnet --model DIR --controlnet DIR [--count 100]
"""
import argparse
import json
import sys

import cv2
import numpy as np

from distill import eval_adherence
from distill.components import canny_controls


def edge_overlap(rgb, control, tolerance=1):
    """(precision, recall, f1) of the Canny edges of rgb (H, W, 3) uint8 against control edges
    (H, W) bool, each edge pixel counting as matched within `tolerance` pixels."""
    gen = cv2.Canny(np.ascontiguousarray(rgb), 100, 200) > 0
    ctl = control.astype(bool)
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    near_ctl = cv2.dilate(ctl.astype(np.uint8), kernel) > 0
    near_gen = cv2.dilate(gen.astype(np.uint8), kernel) > 0
    p = (gen & near_ctl).sum() / max(1, gen.sum())
    r = (ctl & near_gen).sum() / max(1, ctl.sum())
    f1 = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    return float(p), float(r), float(f1)


def summarise(images, controls):
    scores = np.array([edge_overlap(im, c) for im, c in zip(images, controls)])
    return {"edge_precision": float(scores[:, 0].mean()), "edge_recall": float(scores[:, 1].mean()),
            "edge_f1": float(scores[:, 2].mean())}


def evaluate(pipe_cn, pipe_plain, count, batch=16):
    """Edge overlap (and adherence) with and without the ControlNet on `count` held-out scenes."""
    import torch
    size = pipe_cn.unet.config.sample_size * pipe_cn.vae_scale_factor
    specs, prompts, truth = eval_adherence.eval_specs(count, size)
    controls = canny_controls(truth)  # (N, 3, H, W) in [0, 1]
    with_cn = []
    for i in range(0, count, batch):
        gens = [torch.Generator("cpu").manual_seed(s) for s in range(i, min(count, i + batch))]
        res = pipe_cn(prompts[i:i + batch], image=controls[i:i + batch], num_inference_steps=1,
                      guidance_scale=0.0, generator=gens, output_type="np")
        with_cn.append((res.images * 255).round().clip(0, 255).astype(np.uint8))
    with_cn = np.concatenate(with_cn)
    plain = eval_adherence.generate_pipeline(pipe_plain, prompts, list(range(count)), 1, 0.0)
    ctl = controls[:, 0].numpy() > 0.5
    out = {"controlnet": summarise(with_cn, ctl), "without_controlnet": summarise(plain, ctl)}
    out["controlnet"]["adherence"] = eval_adherence.summarise(
        [eval_adherence.analyse(im, s) for im, s in zip(with_cn, specs)])["adherence"]
    return out, with_cn, plain


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--controlnet", required=True)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch
    from distill.export import load_pipeline
    torch.set_num_threads(args.threads)
    out, _, _ = evaluate(load_pipeline(args.model, args.controlnet), load_pipeline(args.model),
                         args.count)
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
