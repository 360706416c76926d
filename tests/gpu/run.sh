#!/usr/bin/env bash
# tests/gpu/run.sh: everything that needs an NVIDIA GPU, in one go (meant to finish inside eight
# minutes on an H200): builds sdxs for the card in build-gpu/, runs the op-parity suite on the
# device (every CUDA operation against the CPU reference), the end-to-end parity tests of the
# CUDA backend against diffusers (tests/gpu/test_gpu_parity.py), compute-sanitizer over a pipeline
# run and over the hand-written kernels, and prints the benchmark table: sdxs bench --backend cuda
# at batch 1, 4, 16 and 64 on a full-size model, with diffusers fp16 beside it when the Python
# environment has a CUDA build of PyTorch.
#
# The steps that need no Python come first (build, op parity, racecheck and synccheck); the rest
# needs the .venv that scripts/setup makes. This script was written on machines without a GPU and
# has not been run yet; CI covers the CUDA code only through its CPU emulation (see README). Any
# failing step stops it with a message and a non-zero exit status. Usage: tests/gpu/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
trap 'echo "tests/gpu/run.sh: FAILED (line $LINENO: $BASH_COMMAND)" >&2' ERR

t_start=$(date +%s)
step() { printf '\n== %s (%ds)\n' "$1" $(($(date +%s) - t_start)); }
die() { echo "tests/gpu/run.sh: $*" >&2; exit 1; }

# ---- the card and the tools ----
step "GPU"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs an NVIDIA GPU"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
[[ "$cc" =~ ^[0-9]+$ ]] || die "cannot read the GPU's compute capability ('$cc')"
cuda_bin=$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")
[ -x "$cuda_bin/nvcc" ] || die "nvcc not found (PATH or /usr/local/cuda/bin)"
sanitizer=$(command -v compute-sanitizer || true)
if [ -z "$sanitizer" ] && [ -x "$cuda_bin/compute-sanitizer" ]; then
  sanitizer="$cuda_bin/compute-sanitizer"
fi
[ -n "$sanitizer" ] || die "compute-sanitizer not found (it ships with the CUDA toolkit)"

# ---- build for this card only ----
step "build for sm_$cc"
PATH="$cuda_bin:$PATH" cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DSDXS_CUDA=ON \
  -DSDXS_WERROR=ON -DSDXS_CUDA_ARCHS="${cc}-real" >/dev/null
cmake --build build-gpu -j"$(nproc)"

# ---- the operations, each against the CPU reference; shared-memory races and barrier misuse
# in the hand-written kernels (these steps need no Python) ----
step "op parity on the device (build-gpu/test_cuda_ops --device)"
build-gpu/test_cuda_ops --device -v
for tool in racecheck synccheck; do
  step "compute-sanitizer $tool: attention, group norm and the own convolutions"
  "$sanitizer" --tool "$tool" --error-exitcode 9 build-gpu/test_cuda_ops --device \
    --only "attention,group norm,own-conv"
done

# ---- the reference stack (diffusers) for what follows ----
[ -x .venv/bin/python ] || scripts/setup
py=.venv/bin/python

# ---- models: tiny ones for the parity tests and the sanitizer, a full-size one to benchmark ----
step "test models"
models=$("$py" - <<'EOF' | tail -1
import sys
sys.path.insert(0, "tests")
from models import model_dir
tiny, full = model_dir("tiny-dreamshaper"), model_dir("dreamshaper")
print(tiny, full)
EOF
)
read -r tiny full <<<"$models"
if [ ! -d "$tiny" ] || [ ! -d "$full" ]; then
  die "test models were not built ($models)"
fi

# ---- end to end against diffusers ----
step "end-to-end parity of the CUDA backend"
SDXS_GPU=1 SDXS_BUILD="$PWD/build-gpu" "$py" -m pytest -q -ra -x tests/gpu

# ---- compute-sanitizer: memory errors over a pipeline run (eager, captured, replayed) ----
step "compute-sanitizer memcheck: sdxs bench, tiny model, batch 2, 3 runs"
"$sanitizer" --tool memcheck --error-exitcode 9 build-gpu/sdxs bench --model "$tiny" \
  --backend cuda --batch 2 --warmup 2 --runs 1 --json


# ---- the benchmark table ----
step "benchmark: $full, 512x512"
bench_json=()
for b in 1 4 16 64; do
  row=$(build-gpu/sdxs bench --model "$full" --backend cuda --batch "$b" --warmup 3 --runs 10 \
    --json)
  bench_json+=("$row")
done
"$py" - "$full" "${bench_json[@]}" <<'EOF'
import json, sys, time
folder, rows = sys.argv[1], [json.loads(a) for a in sys.argv[2:]]
print(f"{'runtime':<22}{'batch':>6}{'ms/run':>10}{'images/s':>10}{'text':>8}{'unet':>8}"
      f"{'decode':>8}{'png':>8}")
for r in rows:
    s = r["stages"]
    print(f"{'sdxs cuda fp16':<22}{r['batch']:>6}{r['end_to_end']['median_ms']:>10.2f}"
          f"{r['images_per_s']:>10.1f}{s['text_encoder']['median_ms']:>8.2f}"
          f"{s['unet']['median_ms']:>8.2f}{s['decoder']['median_ms']:>8.2f}"
          f"{s['png']['median_ms']:>8.2f}")
try:
    import torch
    cuda = torch.cuda.is_available()
except ImportError:
    cuda = False
if not cuda:
    print("diffusers fp16: not measured (this Python environment's PyTorch has no CUDA)")
    sys.exit(0)
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float16,
                                               safety_checker=None).to("cuda")
pipe.set_progress_bar_config(disable=True)
for b in [r["batch"] for r in rows]:
    prompts = ["a photograph of an astronaut riding a horse"] * b
    times = []
    for i in range(13):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        pipe(prompts, num_inference_steps=1, guidance_scale=0.0, height=512, width=512,
             output_type="np")
        torch.cuda.synchronize()
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1000)
    ms = sorted(times)[len(times) // 2]
    print(f"{'diffusers fp16':<22}{b:>6}{ms:>10.2f}{b * 1000 / ms:>10.1f}")
EOF

elapsed=$(($(date +%s) - t_start))
step "all GPU checks passed in ${elapsed}s"
[ "$elapsed" -le 480 ] || echo "tests/gpu/run.sh: note: over the eight-minute budget" >&2
