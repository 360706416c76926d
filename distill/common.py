"""Shared plumbing of the recipe: run-time setup (device, dtype, threads, determinism), the noise
schedule arithmetic every stage uses, an exponential moving average of weights, and the loss log
that becomes the CSV and SVG curves of a run.

Nothing here assumes a CPU: the device and dtype come from the stage configuration, so the same
code runs the toy recipe on two cores and the full recipe on GPUs.
"""
import contextlib
import csv
import os
import random
import time

import numpy as np
import torch

from distill import torchfix

torchfix.install()  # before any diffusers model runs: see distill/torchfix.py


def setup_runtime(seed, threads=None, deterministic=True):
    """Seeds every generator and pins the CPU thread count, so a run is repeatable from its seed
    on the same machine and thread count."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # denormal weights make CPU kernels a hundred times slower
    if deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_of(name):
    """'auto' means CUDA when present; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def dtype_of(name):
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def autocast(rt):
    """Mixed precision for the forward passes when the runtime asks for fp16/bf16 (weights and
    optimiser state stay fp32); a no-op context for fp32."""
    if rt.dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_of(rt.device).type, dtype=dtype_of(rt.dtype))


class Noise:
    """The DDPM forward process of a scheduler configuration (betas, 1,000 steps), kept on the
    training device: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps with a_t = alphas_cumprod[t]."""

    def __init__(self, scheduler_config, device):
        from diffusers import DDPMScheduler
        sched = DDPMScheduler.from_config(scheduler_config)
        self.alphas_cumprod = sched.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.num_train_timesteps = len(self.alphas_cumprod)

    def coeffs(self, t, ndim=4):
        a = self.alphas_cumprod[t].view(-1, *([1] * (ndim - 1)))
        return a.sqrt(), (1 - a).sqrt()

    def add(self, x0, eps, t):
        sa, sb = self.coeffs(t, x0.ndim)
        return sa * x0 + sb * eps

    def x0_from_eps(self, xt, eps, t):
        sa, sb = self.coeffs(t, xt.ndim)
        return (xt - sb * eps) / sa

    def snr(self, t):
        a = self.alphas_cumprod[t]
        return a / (1 - a)


class EMA:
    """Exponential moving average of a module's parameters (evaluated and exported in place of
    the raw weights: short runs give much cleaner samples with it)."""

    def __init__(self, module, decay):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()
                       if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, module):
        for k, v in module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)

    def copy_to(self, module):
        module.load_state_dict(self.shadow, strict=False)


class LossLog:
    """Collects (stage, step, name, value) rows, prints a progress line every `every` steps and
    appends the rows to a CSV file (one file per run, all stages)."""

    def __init__(self, path, stage, every=50, total=None):
        self.path, self.stage, self.every, self.total = path, stage, every, total
        self.rows, self.start, self.acc = [], time.time(), {}
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def add(self, step, **values):
        for name, v in values.items():
            v = float(v)
            self.rows.append((self.stage, step, name, v))
            self.acc.setdefault(name, []).append(v)
        if (step + 1) % self.every == 0 or (self.total and step + 1 == self.total):
            mean = {k: np.mean(v) for k, v in self.acc.items()}
            self.acc = {}
            text = " ".join(f"{k} {v:.4g}" for k, v in mean.items())
            of = f"/{self.total}" if self.total else ""
            log(f"{self.stage} step {step + 1}{of} {text} ({time.time() - self.start:.0f} s)")

    def close(self):
        if not self.path:
            return
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["stage", "step", "name", "value"])
            for stage, step, name, v in self.rows:
                w.writerow([stage, step, name, f"{v:.6g}"])
        self.rows = []


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def cycle_batches(n, batch_size, generator):
    """Endless index batches over range(n), reshuffled every epoch by a torch generator."""
    if not 0 < batch_size <= n:
        raise ValueError(f"batch size {batch_size} must be in 1..{n} (the number of items)")
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


def lr_lambda(warmup, total):
    """Linear warm-up, then cosine decay to 10% of the peak."""
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        p = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.45 * (1 + np.cos(np.pi * min(1.0, p)))
    return f
