"""One-step schedulers: engine/scheduler.c (through tests/tools/scheduler.c) against diffusers
0.27.2's scheduler objects and StableDiffusionPipeline.

For every supported class x timestep spacing x beta schedule x prediction type (and the keys
that change one step) the test loads the same configuration into diffusers and into the engine
and checks, for several strengths:
  - alphas_cumprod bit for bit (the noise schedule rebuilt as torch builds it);
  - the timestep the U-Net gets, exactly;
  - the starting latent (noise * init_noise_sigma, or add_noise) and the U-Net input
    (scale_model_input) on random float32 latents: relative L2 error at most 1e-6;
  - the step's result (step().prev_sample) for random model outputs: at most 1e-6 from the
    exact value of diffusers' step (its float32 scalars, the elementwise arithmetic done in
    float64), and at most 1e-6 plus diffusers' own float32 error from diffusers' float32 result.
    diffusers applies its scalars one after the other (e.g. x - ((x - x0) / sigma) * sigma), which
    loses up to 1e-3 relative with v or sample prediction at a large final sigma; the engine
    combines them into two coefficients first and stays within 2e-7 of the exact value.
Strength s < 1 is the engine's own definition (scheduler.h): the one-step schedule [t(s)] with
t(s) = floor(s (t1 + 1) + 1/2) - 1. diffusers is given that schedule through its own
set_timesteps: LCMScheduler takes custom timesteps; the others get trailing spacing over t + 1
training steps, which makes set_timesteps(1) produce exactly [t] while the noise tables (built in
__init__ from the real num_train_timesteps) stay as they are.
"""
import inspect
import itertools
import json
import math
import os
import subprocess
import zlib

import numpy as np
import pytest
import torch

from conftest import exe, run

import diffusers
from diffusers.utils import logging as diffusers_logging

diffusers_logging.set_verbosity_error()

REL_L2 = 1e-6
N = 4 * 8 * 8  # elements of the random latents: a batch of one 64x64 image

# The two published SDXS scheduler configurations (see the models README).
REAL_CONFIGS = {
    "sdxs-512-0.9": {
        "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "interpolation_type": "linear",
        "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1,
        "timestep_spacing": "trailing", "trained_betas": None, "use_karras_sigmas": False},
    "sdxs-512-dreamshaper": {
        "_class_name": "DEISMultistepScheduler", "algorithm_type": "deis", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "lower_order_final": True,
        "num_train_timesteps": 1000, "prediction_type": "epsilon", "solver_order": 2,
        "solver_type": "logrho", "steps_offset": 1, "timestep_spacing": "trailing",
        "trained_betas": None},
}

PREDICTIONS = {
    "EulerDiscreteScheduler": ["epsilon", "v_prediction", "sample"],
    "EulerAncestralDiscreteScheduler": ["epsilon", "v_prediction"],
    "DEISMultistepScheduler": ["epsilon", "v_prediction", "sample"],
    "DDIMScheduler": ["epsilon", "v_prediction", "sample"],
    "LCMScheduler": ["epsilon", "v_prediction", "sample"],
}


def trained_betas(n=1000):
    return [float(b) for b in np.linspace(0.0002, 0.018, n) ** 1.1]


BETAS = {
    "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                      "beta_end": 0.012},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
    "trained": {"trained_betas": trained_betas()},
}
SPACINGS = {
    "linspace": {"timestep_spacing": "linspace"},
    "leading": {"timestep_spacing": "leading", "steps_offset": 1},
    "trailing": {"timestep_spacing": "trailing"},
}
STRENGTHS = [1.0, 0.75, 0.5, 0.3, 0.1, 0.002, 0.0]


def matrix():
    cases = {}
    for cls, preds in PREDICTIONS.items():
        for (bname, beta), (sname, spacing), pred in itertools.product(
                BETAS.items(), SPACINGS.items(), preds):
            cfg = {"_class_name": cls, "prediction_type": pred, **beta, **spacing}
            cases[f"{cls}-{bname}-{sname}-{pred}"] = cfg
    # Keys that change one step, each once or twice.
    base = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "timestep_spacing": "trailing"}
    extra = {
        "Euler-continuous-v": {"_class_name": "EulerDiscreteScheduler",
                               "prediction_type": "v_prediction", "timestep_type": "continuous"},
        "Euler-zero-snr-v": {"_class_name": "EulerDiscreteScheduler",
                             "prediction_type": "v_prediction", "rescale_betas_zero_snr": True},
        "Euler-zero-snr-eps": {"_class_name": "EulerDiscreteScheduler",
                               "rescale_betas_zero_snr": True},
        "Euler-original-sample": {"_class_name": "EulerDiscreteScheduler",
                                  "prediction_type": "original_sample"},
        "Euler-T500-leading3": {"_class_name": "EulerDiscreteScheduler",
                                "num_train_timesteps": 500, "timestep_spacing": "leading",
                                "steps_offset": 3},
        "EulerA-T1100": {"_class_name": "EulerAncestralDiscreteScheduler",
                         "num_train_timesteps": 1100},
        "DEIS-leading-dpmsolver": {"_class_name": "DEISMultistepScheduler",
                                   "timestep_spacing": "leading", "steps_offset": 1,
                                   "algorithm_type": "dpmsolver++", "solver_type": "midpoint",
                                   "solver_order": 3},
        "DEIS-T700": {"_class_name": "DEISMultistepScheduler", "num_train_timesteps": 700},
        "DDIM-no-clip": {"_class_name": "DDIMScheduler", "clip_sample": False},
        "DDIM-clip-2.5": {"_class_name": "DDIMScheduler", "clip_sample_range": 2.5},
        "DDIM-alpha0": {"_class_name": "DDIMScheduler", "set_alpha_to_one": False,
                        "clip_sample": False},
        "DDIM-zero-snr-v": {"_class_name": "DDIMScheduler", "prediction_type": "v_prediction",
                            "rescale_betas_zero_snr": True, "clip_sample": False},
        "DDIM-defaults": {"_class_name": "DDIMScheduler"},
        "LCM-defaults": {"_class_name": "LCMScheduler"},
        "LCM-clip": {"_class_name": "LCMScheduler", "clip_sample": True},
        "LCM-orig3-scale7.5": {"_class_name": "LCMScheduler", "original_inference_steps": 3,
                               "timestep_scaling": 7.5},
        "LCM-zero-snr-v": {"_class_name": "LCMScheduler", "prediction_type": "v_prediction",
                           "rescale_betas_zero_snr": True},
    }
    for name, cfg in extra.items():
        cases[name] = cfg if name.endswith("defaults") else {**base, **cfg}
    for name, cfg in REAL_CONFIGS.items():
        cases[name] = cfg
    return cases


CASES = matrix()


def write_config(dirpath, name, cfg):
    path = os.path.join(dirpath, f"{name}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def engine_plans(path, strengths):
    proc = run([exe("sdxs-scheduler"), "plan", path] + [repr(s) for s in strengths])
    return [json.loads(line) for line in proc.stdout.splitlines()]


def diffusers_scheduler(cfg):
    return getattr(diffusers, cfg["_class_name"]).from_config(cfg)


def step_kwargs(sched):
    """What StableDiffusionPipeline.prepare_extra_step_kwargs passes (eta 0, a generator)."""
    params = set(inspect.signature(sched.step).parameters)
    kw = {}
    if "eta" in params:
        kw["eta"] = 0.0
    if "generator" in params:
        kw["generator"] = torch.Generator("cpu").manual_seed(0)
    return kw


def single_step_schedule(cfg, t):
    """A diffusers scheduler whose schedule is the one timestep [t] (see the module doc)."""
    sched = diffusers_scheduler(cfg)
    if cfg["_class_name"] == "LCMScheduler":
        sched.set_timesteps(timesteps=[t])
    else:
        sched.register_to_config(timestep_spacing="trailing", num_train_timesteps=t + 1)
        sched.set_timesteps(1)
    assert [int(x) for x in sched.timesteps] == [t] or cfg.get("timestep_type") == "continuous"
    return sched


def f32(x):
    return np.float32(x)


def apply_plan(p, noise, clean, eps):
    """The three stages of a plan in numpy float32, as sdxs_scheduler_start/model_input/finish
    compute them (test_apply_matches_numpy checks the two agree bit for bit)."""
    if clean is None:
        start = noise * f32(p["init_sigma"])
    else:
        start = f32(p["add_x"]) * clean + f32(p["add_noise"]) * noise
    model_in = start / f32(p["in_div"])
    if p["skip_unet"]:
        return start, model_in, start.copy()
    result = f32(p["out_x"]) * start + f32(p["out_eps"]) * eps
    if p["clip"] > 0:
        x0 = f32(p["x0_x"]) * start + f32(p["x0_eps"]) * eps
        result = result + f32(p["out_x0"]) * np.clip(x0, -f32(p["clip"]), f32(p["clip"]))
    return start, model_in, result


def rel_l2(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-30))


def diffusers_step(sched, t, noise, clean, eps):
    """Start latent, U-Net input and step result as the pipelines compute them."""
    x = torch.from_numpy(noise.reshape(1, 4, 8, 8))
    if clean is None:
        latents = x * sched.init_noise_sigma
    else:
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(0)  # as StableDiffusionImg2ImgPipeline does
        latents = sched.add_noise(torch.from_numpy(clean.reshape(1, 4, 8, 8)), x,
                                  sched.timesteps[:1])
    model_in = sched.scale_model_input(latents, t)
    out = sched.step(torch.from_numpy(eps.reshape(1, 4, 8, 8)), t, latents,
                     **step_kwargs(sched)).prev_sample
    return latents.numpy().reshape(-1), model_in.numpy().reshape(-1), out.numpy().reshape(-1)


def diffusers_exact_result(sched_factory, t, latents, eps):
    """diffusers' step on float64 tensors: the same float32 scalars, exact elementwise math."""
    sched = sched_factory()
    x = torch.from_numpy(latents.astype(np.float64).reshape(1, 4, 8, 8))
    m = torch.from_numpy(eps.astype(np.float64).reshape(1, 4, 8, 8))
    sched.scale_model_input(x, t)
    return sched.step(m, t, x, **step_kwargs(sched)).prev_sample.numpy().reshape(-1)


def check_stages(ours, theirs, exact, what):
    """Returns (result vs diffusers, diffusers' own float32 error) after asserting."""
    for stage, a, b in zip(("start", "input"), ours[:2], theirs[:2]):
        err = rel_l2(a, b)
        assert err <= REL_L2, f"{what} {stage}: relative L2 {err:.3g}"
    own = rel_l2(theirs[2], exact)
    to_exact, to_ref = rel_l2(ours[2], exact), rel_l2(ours[2], theirs[2])
    assert to_exact <= REL_L2, f"{what} result: {to_exact:.3g} from diffusers' exact step"
    assert to_ref <= REL_L2 + own, f"{what} result: {to_ref:.3g} from diffusers (own {own:.3g})"
    return to_ref, own


def expected_timestep(t1, s):
    return math.floor(s * (t1 + 1) + 0.5) - 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_diffusers(name, tmp_path):
    cfg = CASES[name]
    path = write_config(str(tmp_path), "scheduler_config", cfg)
    continuous = cfg.get("timestep_type") == "continuous"

    # The noise schedule, bit for bit.
    table = json.loads(run([exe("sdxs-scheduler"), "alphas", path]).stdout)
    ref = diffusers_scheduler(cfg)
    assert np.array_equal(np.array(table["alphas_cumprod"], np.float32),
                          ref.alphas_cumprod.numpy()), "alphas_cumprod differ"

    # Text-to-image: set_timesteps(1) as StableDiffusionPipeline calls it.
    ref.set_timesteps(1)
    t1_ref = ref.timesteps[0]
    plans = engine_plans(path, STRENGTHS)
    p1 = plans[0]
    assert p1["train_step"] == table["text_timestep"]
    if continuous:
        assert abs(p1["timestep"] - float(t1_ref)) <= 1e-6 * abs(float(t1_ref))
    else:
        assert p1["timestep"] == float(t1_ref), (p1["timestep"], t1_ref)
        assert p1["train_step"] == int(t1_ref)
    assert f32(p1["init_sigma"]) == f32(float(ref.init_noise_sigma))

    rng = np.random.default_rng(zlib.crc32(name.encode()))
    noise, clean, eps = (rng.standard_normal(N).astype(np.float32) for _ in range(3))
    def text_schedule():
        sched = diffusers_scheduler(cfg)
        sched.set_timesteps(1)
        return sched

    ours = apply_plan(p1, noise, None, eps)
    theirs = diffusers_step(ref, t1_ref, noise, None, eps)
    exact = diffusers_exact_result(text_schedule, t1_ref, theirs[0], eps)
    worst, worst_own = check_stages(ours, theirs, exact, "text-to-image")

    # Image-to-image at every strength, on the one-step schedule [t(s)].
    t1 = table["text_timestep"]
    for s, p in zip(STRENGTHS, plans):
        t = expected_timestep(t1, s)
        if s == 0 or t < 0:
            assert p["skip_unet"] and p["add_x"] == 1 and p["add_noise"] == 0
            assert np.array_equal(apply_plan(p, noise, clean, eps)[2], clean)
            continue
        assert not p["skip_unet"] and p["train_step"] == t
        sched = single_step_schedule(cfg, t)
        ts = sched.timesteps[0]
        if continuous:
            assert abs(p["timestep"] - float(ts)) <= 1e-6 * abs(float(ts))
        else:
            assert p["timestep"] == float(ts)
        ours = apply_plan(p, noise, clean, eps)
        theirs = diffusers_step(sched, ts, noise, clean, eps)
        exact = diffusers_exact_result(lambda: single_step_schedule(cfg, t), ts, theirs[0], eps)
        err, own = check_stages(ours, theirs, exact, f"strength {s} (t={t})")
        worst, worst_own = max(worst, err), max(worst_own, own)
    print(f"{name}: result vs diffusers {worst:.3g} (diffusers' own float32 error {worst_own:.3g})")


@pytest.mark.parametrize("name", ["sdxs-512-0.9", "sdxs-512-dreamshaper", "DDIM-defaults",
                                  "LCM-clip", "DDIM-clip-2.5"])
def test_apply_matches_numpy(name, tmp_path):
    """sdxs_scheduler_start/model_input/finish compute what apply_plan computes, bit for bit."""
    path = write_config(str(tmp_path), "scheduler_config", CASES[name])
    rng = np.random.default_rng(5)
    noise, clean, eps = (rng.standard_normal(N).astype(np.float32) * 3 for _ in range(3))
    files = {}
    for key, arr in (("noise", noise), ("clean", clean), ("eps", eps)):
        files[key] = str(tmp_path / f"{key}.f32")
        arr.tofile(files[key])
    for s, with_clean in ((1.0, False), (1.0, True), (0.4, True), (0.0, True)):
        out = str(tmp_path / "out.f32")
        run([exe("sdxs-scheduler"), "apply", path, repr(s), str(N), files["noise"],
             files["clean"] if with_clean else "-", files["eps"], out])
        got = np.fromfile(out, np.float32).reshape(3, N)
        p = engine_plans(path, [s])[0]
        want = apply_plan(p, noise, clean if with_clean else None, eps)
        for i in range(3):
            assert np.array_equal(got[i], want[i]), (s, with_clean, i)


# ---- StableDiffusionPipeline with num_inference_steps=1 ----

def noise_bytes(count, seed):
    """The engine's seeded noise (tests/test_noise.py checks it equals torch.randn)."""
    return subprocess.run([exe("sdxs-noise"), str(count), str(seed)], capture_output=True,
                          check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def tiny_pipeline():
    """A StableDiffusionPipeline with tiny random components; prompts go in as embeddings."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=32)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=8)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=None, tokenizer=None, unet=unet,
        scheduler=diffusers_scheduler(REAL_CONFIGS["sdxs-512-0.9"]), safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("name", ["sdxs-512-0.9", "sdxs-512-dreamshaper", "DDIM-defaults",
                                  "LCM-defaults", "Euler-T500-leading3",
                                  "EulerA-T1100", "Euler-continuous-v"])
def test_pipeline_one_step(name, tiny_pipeline, tmp_path):
    """StableDiffusionPipeline(num_inference_steps=1, guidance_scale=0) gives the U-Net the
    plan's timestep and input (from the engine's own seeded noise) and ends at the plan's
    result for the U-Net's output."""
    cfg = CASES[name]
    path = write_config(str(tmp_path), "scheduler_config", cfg)
    pipe = tiny_pipeline
    pipe.scheduler = diffusers_scheduler(cfg)
    seen = {}

    def hook(module, args, output):
        seen["sample"] = args[0].detach().clone()
        seen["timestep"] = args[1]
        seen["eps"] = output[0].detach().clone()

    handle = pipe.unet.register_forward_hook(hook)
    try:
        embeds = torch.randn(1, 77, 32, generator=torch.Generator("cpu").manual_seed(1))
        latents = pipe(prompt_embeds=embeds, height=64, width=64, num_inference_steps=1,
                       guidance_scale=0.0, output_type="latent",
                       generator=torch.Generator("cpu").manual_seed(1234)).images
    finally:
        handle.remove()

    p = engine_plans(path, [1.0])[0]
    t = seen["timestep"]
    if cfg.get("timestep_type") == "continuous":
        assert abs(p["timestep"] - float(t)) <= 1e-6 * abs(float(t))
    else:
        assert p["timestep"] == float(t), (p["timestep"], t)
    noise = np.frombuffer(noise_bytes(N, 1234), np.float32)
    eps = seen["eps"].numpy().reshape(-1)
    start, model_in, result = apply_plan(p, noise, None, eps)
    assert rel_l2(model_in, seen["sample"].numpy().reshape(-1)) <= REL_L2

    def text_schedule():
        sched = diffusers_scheduler(cfg)
        sched.set_timesteps(1)
        return sched

    exact = diffusers_exact_result(text_schedule, t, start, eps)
    final = latents.numpy().reshape(-1)
    assert rel_l2(result, exact) <= REL_L2
    assert rel_l2(result, final) <= REL_L2 + rel_l2(final, exact)


# ---- configurations the engine refuses ----

BAD_CONFIGS = {
    "unknown class": ({"_class_name": "PNDMScheduler"}, "_class_name"),
    "no class": ({"num_train_timesteps": 1000}, "_class_name"),
    "string for an integer": ({"_class_name": "DDIMScheduler", "num_train_timesteps": "1000"},
                              "num_train_timesteps"),
    "number for a string": ({"_class_name": "DDIMScheduler", "timestep_spacing": 3},
                            "timestep_spacing"),
    "unknown spacing": ({"_class_name": "EulerDiscreteScheduler",
                         "timestep_spacing": "uniform"}, "timestep_spacing"),
    "unknown beta schedule": ({"_class_name": "DDIMScheduler", "beta_schedule": "sigmoid"},
                              "beta_schedule"),
    "unknown prediction": ({"_class_name": "DEISMultistepScheduler",
                            "prediction_type": "flow"}, "prediction_type"),
    "ancestral sample": ({"_class_name": "EulerAncestralDiscreteScheduler",
                          "prediction_type": "sample"}, "prediction_type"),
    "karras": ({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True},
               "use_karras_sigmas"),
    "log-linear sigmas": ({"_class_name": "EulerDiscreteScheduler",
                           "interpolation_type": "log_linear"}, "interpolation_type"),
    "thresholding": ({"_class_name": "DDIMScheduler", "thresholding": True}, "thresholding"),
    "bool as string": ({"_class_name": "DDIMScheduler", "clip_sample": "yes"}, "clip_sample"),
    "short trained betas": ({"_class_name": "DDIMScheduler", "trained_betas": [0.01] * 10},
                            "trained_betas"),
    "betas not numbers": ({"_class_name": "DDIMScheduler",
                           "trained_betas": ["x"] * 1000}, "trained_betas"),
    "too many train steps": ({"_class_name": "DDIMScheduler", "num_train_timesteps": 20000},
                             "num_train_timesteps"),
    "offset past the end": ({"_class_name": "DDIMScheduler", "steps_offset": 1000},
                            "steps_offset"),
    "deis algorithm": ({"_class_name": "DEISMultistepScheduler", "algorithm_type": "sde"},
                       "algorithm_type"),
    "lcm steps": ({"_class_name": "LCMScheduler", "original_inference_steps": 0},
                  "original_inference_steps"),
    "zero snr with epsilon": ({"_class_name": "DDIMScheduler", "rescale_betas_zero_snr": True,
                               "timestep_spacing": "trailing"}, "rescale_betas_zero_snr"),
    "ancestral zero snr": ({"_class_name": "EulerAncestralDiscreteScheduler",
                            "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"},
                           "rescale_betas_zero_snr"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config(case, tmp_path):
    cfg, key = BAD_CONFIGS[case]
    path = write_config(str(tmp_path), "scheduler_config", cfg)
    proc = run([exe("sdxs-scheduler"), "plan", path, "1"], check=False)
    assert proc.returncode == 3, proc.stderr
    assert path in proc.stderr and key in proc.stderr, proc.stderr


def test_not_json(tmp_path):
    path = str(tmp_path / "scheduler_config.json")
    with open(path, "w") as f:
        f.write('{"_class_name": "DDIMScheduler",')
    proc = run([exe("sdxs-scheduler"), "plan", path, "1"], check=False)
    assert proc.returncode == 3 and path in proc.stderr


@pytest.mark.parametrize("strength", ["-0.1", "1.5", "nan", "inf"])
def test_bad_strength(strength, tmp_path):
    path = write_config(str(tmp_path), "scheduler_config", REAL_CONFIGS["sdxs-512-0.9"])
    proc = run([exe("sdxs-scheduler"), "plan", path, strength], check=False)
    assert proc.returncode == 2 and "strength" in proc.stderr
