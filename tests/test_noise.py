"""Seeded noise: sdxs_randn (through tests/tools/noise.c) against torch.randn with a CPU
torch.Generator, the noise diffusers draws for a seed.

On x86-64 machines with AVX2 torch 1.13 runs its AVX2 normal kernel and the engine reproduces
it bit for bit, so the comparison there is exact. torch's portable kernel (ATEN_CPU_CAPABILITY=
default, or a machine without AVX2) uses the C library's logf/sinf/cosf instead; against that one
the engine stays within 1e-5 absolute (a few units in the last place), checked separately.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import exe, run

SEEDS = [0, 1, 42, 2**31 - 1, 2**32 + 5, 2**63 - 1, 2**64 - 1, 987654321987]
# Short counts take the double-precision pair path, 16 and up the block path; the large ones
# are the latents of 512x512, 768x512 and 1024x1024 images, and a ragged batch.
COUNTS = [1, 2, 7, 8, 15, 16, 17, 31, 33, 255, 4 * 64 * 64, 4 * 96 * 64, 4 * 128 * 128,
          2 * 4 * 64 * 64 + 3]
TOLERANCE = 1e-5


def engine_noise(count, seeds):
    proc = subprocess.run([exe("sdxs-noise"), str(count)] + [str(s) for s in seeds],
                          capture_output=True, check=True, timeout=120)
    return np.frombuffer(proc.stdout, dtype=np.float32).reshape(len(seeds), count)


def torch_noise(count, seed):
    return torch.randn(count, generator=torch.Generator("cpu").manual_seed(seed)).numpy()


def torch_has_avx2_kernel():
    line = [l for l in torch.__config__.show().splitlines() if "CPU capability usage" in l]
    return bool(line) and ("AVX2" in line[0] or "AVX512" in line[0])


def assert_same(ours, ref, what):
    """Bit-exact where torch runs its AVX2 kernel, else within TOLERANCE."""
    diff = float(np.abs(ours - ref).max()) if ours.size else 0.0
    assert diff <= TOLERANCE, f"{what}: max abs diff {diff}"
    if torch_has_avx2_kernel():
        mismatches = int((ours != ref).sum())
        assert mismatches == 0, f"{what}: {mismatches} values differ"
    return diff


@pytest.mark.parametrize("count", COUNTS)
def test_matches_torch(count):
    ours = engine_noise(count, SEEDS)
    worst = 0.0
    for i, seed in enumerate(SEEDS):
        diff = assert_same(ours[i], torch_noise(count, seed), f"seed {seed} count {count}")
        worst = max(worst, diff)
    print(f"count {count}: max abs diff {worst:g} over {len(SEEDS)} seeds")


def test_many_seeds_bit_exact():
    if not torch_has_avx2_kernel():
        pytest.skip("torch does not run its AVX2 normal kernel here")
    seeds = list(range(100, 164))
    ours = engine_noise(4 * 64 * 64, seeds)
    for i, seed in enumerate(seeds):
        assert np.array_equal(ours[i], torch_noise(4 * 64 * 64, seed)), f"seed {seed}"


PORTABLE_SCRIPT = """
import sys, numpy as np, torch
count, seeds = int(sys.argv[1]), [int(s) for s in sys.argv[2:]]
for s in seeds:
    sys.stdout.buffer.write(torch.randn(count, generator=torch.Generator('cpu').manual_seed(s))
                            .numpy().tobytes())
"""


def test_within_tolerance_of_portable_kernel():
    count, seeds = 4 * 64 * 64 + 5, [0, 1, 42]
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    proc = subprocess.run([sys.executable, "-c", PORTABLE_SCRIPT, str(count)] +
                          [str(s) for s in seeds], capture_output=True, check=True, env=env,
                          timeout=300)
    ref = np.frombuffer(proc.stdout, dtype=np.float32).reshape(len(seeds), count)
    diff = float(np.abs(engine_noise(count, seeds) - ref).max())
    print(f"portable torch kernel: max abs diff {diff:g}")
    assert diff <= TOLERANCE


def test_shape_does_not_matter_in_torch():
    """The engine draws per count; torch's values depend on the count alone, not the shape."""
    for shape in [(4, 64, 64), (2, 4, 64, 64), (3, 5), (1, 4, 8, 9)]:
        count = int(np.prod(shape))
        shaped = torch.randn(*shape, generator=torch.Generator("cpu").manual_seed(7))
        assert torch.equal(shaped.reshape(-1), torch.from_numpy(torch_noise(count, 7)))


def test_seed_mapping():
    """torch keeps the low 32 bits of the seed and takes negative seeds modulo 2^64."""
    a = torch.randn(40, generator=torch.Generator("cpu").manual_seed(5))
    b = torch.randn(40, generator=torch.Generator("cpu").manual_seed(2**32 + 5))
    c = torch.randn(40, generator=torch.Generator("cpu").manual_seed(-1))
    d = torch.randn(40, generator=torch.Generator("cpu").manual_seed(2**64 - 1))
    assert torch.equal(a, b) and torch.equal(c, d)
    ours = engine_noise(40, [5, 2**32 + 5])
    assert np.array_equal(ours[0], ours[1])


def test_batch_as_diffusers_draws_it():
    """diffusers' randn_tensor: one generator for the batch draws one tensor; a list of
    generators draws one tensor per image. Both are counts of the engine's noise."""
    from diffusers.utils.torch_utils import randn_tensor
    shape = (2, 4, 64, 64)
    single = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(11))
    ours = engine_noise(int(np.prod(shape)), [11])
    assert_same(ours[0], single.numpy().reshape(-1), "one generator, batch 2")
    per_image = randn_tensor(shape, generator=[torch.Generator("cpu").manual_seed(s)
                                               for s in (11, 12)])
    ours = engine_noise(4 * 64 * 64, [11, 12])
    assert_same(ours, per_image.numpy().reshape(2, -1), "a generator per image")


@pytest.mark.parametrize("args", [[], ["16"], ["x", "1"], ["16", "-1"], ["16", "2" * 30],
                                  ["16", "1.5"]])
def test_bad_usage(args):
    proc = run([exe("sdxs-noise")] + args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
