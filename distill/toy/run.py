"""The toy run, one command: data, teacher, stages a-d, export, evaluation, model card.

    .venv/bin/python -m distill.toy.run --out OUT_DIR [--ship weights/sdxs-tiny-shapes]
                                        [--seed 0] [--threads 1] [--scale 1.0]

OUT_DIR receives every intermediate folder (teacher/, student/, controlnets), losses.csv,
run.json (configuration, timings, evaluation) and sample grids. With --ship, the one-step model
and its ControlNet are also written to the shipped folders with the model card. --scale shrinks
every step count (a quick end-to-end check); a scaled run is never a release.
The run is deterministic from --seed for a given machine and thread count.
"""
import argparse
import json
import os
import shutil
import sys
import time


def _set_blas_core():
    """OpenBLAS misdetects some virtual CPUs as a generic x86 core and then runs matrix products
    five to ten times slower; name the core explicitly, from the CPU flags (this must happen
    before torch loads OpenBLAS). An explicit OPENBLAS_CORETYPE is left alone."""
    if "OPENBLAS_CORETYPE" in os.environ or not os.path.exists("/proc/cpuinfo"):
        return
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")),
                     [])
    if "avx512f" in flags:
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif "avx2" in flags:
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"


OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"  # Debian's libopenblas0-pthread


def _use_openblas():
    """Debian's python3-torch calls whichever libblas.so.3 the system selects; the reference
    BLAS that Debian installs by default makes every linear layer about seven times slower.
    When Debian's OpenBLAS is installed, the run re-executes itself with that library first on
    the search path (the system's selection is left alone)."""
    if os.environ.get("SDXS_DISTILL_BLAS") or not os.path.isdir(OPENBLAS_DIR):
        return
    env = dict(os.environ, SDXS_DISTILL_BLAS="openblas",
               LD_LIBRARY_PATH=":".join(p for p in (OPENBLAS_DIR,
                                                    os.environ.get("LD_LIBRARY_PATH")) if p))
    os.execve(sys.executable, [sys.executable, "-m", "distill.toy.run"] + sys.argv[1:], env)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for everything the run makes")
    ap.add_argument("--ship", help="also write the shipped model here (and NAME-canny beside)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared two-core machine, two OpenMP threads "
                         "ran 3 to 8 times slower than one, waiting on each other)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    ap.add_argument("--images", type=int, default=None, help="training images (default 20,000)")
    ap.add_argument("--eval-count", type=int, default=200)
    ap.add_argument("--ship-only", action="store_true",
                    help="only (re)write --ship from a finished run in --out")
    args = ap.parse_args(argv)
    if args.ship and args.scale != 1.0:
        ap.error("--ship needs the full schedule (--scale 1)")
    if argv is None:
        _use_openblas()
    _set_blas_core()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    from distill.toy import pipeline
    if args.ship_only:
        if not args.ship:
            ap.error("--ship-only needs --ship")
        with open(os.path.join(args.out, "run.json")) as f:
            pipeline.ship(os.path.abspath(args.out), os.path.abspath(args.ship), json.load(f))
        return 0
    pipeline.run(args)


if __name__ == "__main__":
    sys.exit(main())
