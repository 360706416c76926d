"""Writing what a stage produced as diffusers folders the C engine loads as they are.

write_pipeline  model_index.json, text_encoder/, tokenizer/ (the real CLIP BPE files), unet/,
                vae/ (AutoencoderTiny), scheduler/ (one-step EulerDiscrete, 'trailing' spacing)
write_controlnet  config.json and diffusion_pytorch_model.safetensors
Weights are safetensors in fp32; folder_megabytes and parameter counts go into the model card.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ONE_STEP_SCHEDULER = dict(_class_name="EulerDiscreteScheduler", num_train_timesteps=1000,
                          beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          prediction_type="epsilon", steps_offset=1,
                          timestep_spacing="trailing", interpolation_type="linear",
                          use_karras_sigmas=False, trained_betas=None)


def write_tokenizer_files(dst, pad_token="<|endoftext|>"):
    """The CLIP tokenizer folder, built by tests/ref/tokenizer_files.py from the BPE merge list
    of the open-clip-torch package (the real 49,408-entry vocabulary)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
    from tokenizer_files import write_tokenizer
    write_tokenizer(dst, pad_token)


TRAINING_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                 "trained_betas", "prediction_type", "steps_offset")


def scheduler_for(scheduler_config, class_name="EulerDiscreteScheduler", **overrides):
    """A scheduler of the given class on the same training betas. Only the training schedule
    is carried over: another class's settings (a DPM-Solver's lambda_min_clipped of -inf, say)
    would otherwise be saved into the config, and -Infinity is not JSON."""
    import diffusers
    cls = getattr(diffusers, class_name)
    base = {k: v for k, v in dict(scheduler_config).items() if k in TRAINING_KEYS}
    base.update(overrides)
    return cls.from_config(base)


def one_step_scheduler(scheduler_config):
    """The shipped one-step scheduler (ONE_STEP_SCHEDULER) on the training betas."""
    return scheduler_for(scheduler_config, "EulerDiscreteScheduler",
                         **{k: v for k, v in ONE_STEP_SCHEDULER.items() if not k.startswith("_")})


def write_pipeline(dst, text_encoder, unet, vae, scheduler, pad_token="<|endoftext|>",
                   tokenizer_dir=None):
    """A StableDiffusionPipeline folder (no safety checker, no feature extractor). The tokenizer
    is copied from tokenizer_dir (a teacher's) when given, else built with pad_token."""
    import shutil

    import diffusers
    os.makedirs(dst, exist_ok=True)
    text_encoder.save_pretrained(os.path.join(dst, "text_encoder"), safe_serialization=True)
    if tokenizer_dir:
        shutil.copytree(tokenizer_dir, os.path.join(dst, "tokenizer"), dirs_exist_ok=True)
    else:
        write_tokenizer_files(os.path.join(dst, "tokenizer"), pad_token)
    unet.save_pretrained(os.path.join(dst, "unet"), safe_serialization=True)
    vae.save_pretrained(os.path.join(dst, "vae"), safe_serialization=True)
    scheduler.save_pretrained(os.path.join(dst, "scheduler"))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": ["transformers", type(text_encoder).__name__],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", type(unet).__name__],
        "vae": ["diffusers", type(vae).__name__],
    }
    with open(os.path.join(dst, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def write_controlnet(dst, controlnet):
    controlnet.save_pretrained(dst, safe_serialization=True)


def load_pipeline(folder, controlnet=None):
    """The folder as a diffusers pipeline on the CPU (the ControlNet variant when a ControlNet
    folder is given)."""
    from diffusers import (ControlNetModel, StableDiffusionControlNetPipeline,
                           StableDiffusionPipeline)
    kw = dict(safety_checker=None, requires_safety_checker=False)
    if controlnet:
        cn = ControlNetModel.from_pretrained(controlnet)
        pipe = StableDiffusionControlNetPipeline.from_pretrained(folder, controlnet=cn, **kw)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(folder, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def folder_megabytes(folder):
    total = 0
    for dirpath, _, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total / 1e6


def parameter_counts(pipe):
    parts = {"text_encoder": pipe.text_encoder, "unet": pipe.unet,
             "vae_encoder": pipe.vae.encoder, "vae_decoder": pipe.vae.decoder}
    if getattr(pipe, "controlnet", None) is not None:
        parts["controlnet"] = pipe.controlnet
    return {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
