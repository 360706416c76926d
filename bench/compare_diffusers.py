#!/usr/bin/env python3
"""Times sdxs and diffusers on the same model folder, in one run, with the same thread count, and
prints one table: per stage and end to end (median of the timed runs after warm-up), images per
second, peak resident memory, and the ratio. A benchmark, not a test: nothing here asserts.

    .venv/bin/python bench/compare_diffusers.py --model tests/data/models/dreamshaper --threads 2

Each side runs in its own process so that peak memory is its own. diffusers runs
StableDiffusionPipeline (one step, guidance 0, the folder's AutoencoderTiny) in fp32, or under
in bfloat16 when --precision bf16 is given (every weight and activation: torch 1.13's CPU
autocast to bfloat16 stops in group_norm on these pipelines, mixing float and bfloat16), against
sdxs's bf16 mode (bfloat16 products with float32 sums).

Debian's python3-torch takes its matrix products from libblas.so.3, which on a fresh Debian 12
resolves to the unoptimised reference BLAS (about 3 GFLOP/s here); diffusers is given OpenBLAS
instead (30 times faster here) by putting Debian's openblas-pthread folder first on its library
path, so that the comparison is with diffusers at its best on this machine (--diffusers-blas).
"""
import argparse
import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"

# The diffusers side, run as `python -c`: prints one JSON object shaped like `sdxs bench --json`.
DIFFUSERS = textwrap.dedent("""
    import json, resource, statistics, sys, time
    import torch
    from diffusers import AutoencoderTiny, StableDiffusionPipeline

    model, threads, runs, warmup, batch, width, height, precision, prompt = sys.argv[1:10]
    threads, runs, warmup, batch = int(threads), int(runs), int(warmup), int(batch)
    width, height = int(width), int(height)
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    vae = AutoencoderTiny.from_pretrained(model, subfolder="vae")
    pipe = StableDiffusionPipeline.from_pretrained(model, vae=vae, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if precision == "bf16":
        pipe.to(dtype=torch.bfloat16)

    # Stage times from forward hooks: the text encoder, the U-Net and the decoder.
    marks = {}
    def timed(module, name):
        module.register_forward_pre_hook(lambda *a: marks.__setitem__(name + "0", time.perf_counter()))
        module.register_forward_hook(lambda *a: marks.__setitem__(name + "1", time.perf_counter()))
    timed(pipe.text_encoder, "text_encoder")
    timed(pipe.unet, "unet")
    timed(pipe.vae.decoder, "decoder")

    def once(i):
        gen = [torch.Generator("cpu").manual_seed(1000 + i * batch + j) for j in range(batch)]
        t0 = time.perf_counter()
        pipe([prompt] * batch, num_inference_steps=1, guidance_scale=0.0, width=width,
             height=height, generator=gen, output_type="pil")
        t1 = time.perf_counter()
        out = {k: (marks[k + "1"] - marks[k + "0"]) * 1e3 for k in ("text_encoder", "unet", "decoder")}
        out["end_to_end"] = (t1 - t0) * 1e3
        return out

    for i in range(warmup):
        once(i)
    times = [once(warmup + i) for i in range(runs)]
    stages = {k: {"median_ms": statistics.median(t[k] for t in times),
                  "min_ms": min(t[k] for t in times), "max_ms": max(t[k] for t in times)}
              for k in times[0]}
    e2e = stages.pop("end_to_end")
    print(json.dumps({"stages": stages, "end_to_end": e2e,
                      "images_per_s": batch * 1000.0 / e2e["median_ms"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
""")


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a diffusers SDXS folder")
    ap.add_argument("--sdxs", default=os.path.join(ROOT, "build", "sdxs"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--prompt", default="a red circle above a blue square on a yellow background")
    ap.add_argument("--diffusers-blas", choices=("openblas", "system"), default="openblas",
                    help="the BLAS torch's matrix products use (default: Debian's OpenBLAS)")
    a = ap.parse_args()

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    torch_env = dict(env)
    blas = "system libblas.so.3"
    if a.diffusers_blas == "openblas":
        if not os.path.exists(os.path.join(OPENBLAS_DIR, "libblas.so.3")):
            sys.exit(f"compare_diffusers: {OPENBLAS_DIR} is missing (apt install "
                     "libopenblas0-pthread, or pass --diffusers-blas system)")
        torch_env["LD_LIBRARY_PATH"] = OPENBLAS_DIR + os.pathsep + env.get("LD_LIBRARY_PATH", "")
        torch_env["OPENBLAS_NUM_THREADS"] = str(a.threads)
        blas = "OpenBLAS (openblas-pthread)"
    ours = run_json([a.sdxs, "bench", "--json", "--model", a.model, "--threads", str(a.threads),
                     "--runs", str(a.runs), "--warmup", str(a.warmup), "--batch", str(a.batch),
                     "--width", str(a.width), "--height", str(a.height),
                     "--precision", a.precision, "--prompt", a.prompt], env)
    theirs = run_json([sys.executable, "-c", DIFFUSERS, a.model, str(a.threads), str(a.runs),
                       str(a.warmup), str(a.batch), str(a.width), str(a.height), a.precision,
                       a.prompt], torch_env)

    print(f"model {a.model}  {a.width}x{a.height}  batch {a.batch}  threads {a.threads}  "
          f"{a.precision}  median of {a.runs} runs after {a.warmup} warm-up  diffusers BLAS: {blas}")
    print(f"{'stage':<14} {'sdxs ms':>10} {'diffusers ms':>13} {'speed-up':>9}")
    for k in ("text_encoder", "unet", "decoder"):
        o, t = ours["stages"][k]["median_ms"], theirs["stages"][k]["median_ms"]
        print(f"{k:<14} {o:>10.1f} {t:>13.1f} {t / o:>8.2f}x")
    o, t = ours["end_to_end"]["median_ms"], theirs["end_to_end"]["median_ms"]
    print(f"{'end to end':<14} {o:>10.1f} {t:>13.1f} {t / o:>8.2f}x")
    print(f"{'images/s':<14} {ours['images_per_s']:>10.3f} {theirs['images_per_s']:>13.3f}")
    print(f"{'peak RSS MiB':<14} {ours['peak_rss_mb']:>10.0f} {theirs['peak_rss_mb']:>13.0f}")
    print("(sdxs end to end includes tokenizing and PNG encoding; diffusers' includes PIL "
          "conversion, not PNG)")


if __name__ == "__main__":
    main()
