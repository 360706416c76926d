"""Configuration of every stage of the recipe, as dataclasses that read and write JSON.

The defaults are the paper's choices where it states them; distill/toy/config.py overrides sizes
and step counts for the two-core toy run, and distill/configs/*.json hold full-scale settings.
"""
import dataclasses
import json
from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class Runtime:
    seed: int = 0
    device: str = "auto"        # "cpu", "cuda", "cuda:1", or "auto"
    dtype: str = "fp32"         # training precision of the trained network ("fp32", "bf16")
    threads: int = 0            # CPU threads; 0 leaves PyTorch's default
    deterministic: bool = True  # torch.use_deterministic_algorithms
    log_every: int = 50


@dataclass
class DecoderDistill:
    """Stage a: a tiny AutoencoderTiny-style decoder trained to reproduce the teacher decoder."""
    channels: int = 64                  # per level (AutoencoderTiny keeps one width)
    blocks: List[int] = field(default_factory=lambda: [3, 3, 3, 1])
    steps: int = 100_000
    batch: int = 16
    lr: float = 1e-4
    disc_lr: float = 1e-4
    downsample: int = 8                 # output loss on 8x average-pooled images (the paper)
    gan_weight: float = 0.1
    gan_start: int = 0                  # steps of output loss alone before the GAN joins
    disc_channels: int = 64
    latent_noise: float = 0.0           # std of noise added to latents (robustness to the U-Net)


@dataclass
class BlockRemoval:
    """Stage b: U-Net compression by block removal with output and feature distillation."""
    drop_mid: bool = True
    drop_levels: int = 1
    layers_per_block: int = 1
    steps: int = 50_000
    batch: int = 64
    lr: float = 5e-5
    w_task: float = 1.0                 # denoising loss against the true noise
    w_out: float = 1.0                  # MSE to the teacher's epsilon
    w_feat: float = 1.0                 # MSE of paired block outputs
    caption_dropout: float = 0.1
    ema_decay: float = 0.0


@dataclass
class OneStep:
    """Stage c: one-step training. Teacher ODE pairs, feature matching on the straightened
    trajectory, then segmented score distillation."""
    pairs: int = 100_000                # (noise, teacher ODE sample) pairs
    ode_steps: int = 32
    ode_guidance: float = 7.5
    pair_batch: int = 64
    fm_steps: int = 10_000              # feature-matching warm-up
    fm_t_final_prob: float = 0.5        # share of warm-up samples at t = T-1 (the one-step input)
    fm_feature_t: int = 0               # timestep at which the teacher U-Net encodes samples
    fm_weights: List[float] = field(default_factory=lambda: [1.0])  # latent, then each layer
    ssd_steps: int = 10_000             # segmented score distillation
    alpha: float = 0.5                  # score distillation on t < alpha*T (low-noise part)
    t_min: int = 20
    real_guidance: float = 7.5          # classifier-free guidance of the real score
    w_fm_start: float = 1.0             # feature-matching weight, decayed linearly ...
    w_fm_end: float = 0.2               # ... to this by the end of the stage
    w_sd: float = 1.0
    batch: int = 16
    lr: float = 1e-6
    fake_lr: float = 1e-6
    fake_updates: int = 1               # fake-score steps per generator step


@dataclass
class ControlNetStage:
    """Stage d: an edge ControlNet for the teacher, then one for the one-step student trained
    with the teacher's ControlNet inside the real score."""
    cond_channels: List[int] = field(default_factory=lambda: [16, 32, 96, 256])
    teacher_steps: int = 50_000
    teacher_batch: int = 32
    teacher_lr: float = 1e-5
    caption_dropout: float = 0.1
    pairs: int = 20_000
    ode_steps: int = 32
    ode_guidance: float = 7.5
    steps: int = 10_000
    batch: int = 16
    lr: float = 1e-5
    fake_lr: float = 1e-5
    alpha: float = 0.5
    t_min: int = 20
    real_guidance: float = 7.5
    w_fm: float = 1.0
    w_sd: float = 1.0
    conditioning_scale: float = 1.0


@dataclass
class Recipe:
    runtime: Runtime = field(default_factory=Runtime)
    decoder: DecoderDistill = field(default_factory=DecoderDistill)
    unet: BlockRemoval = field(default_factory=BlockRemoval)
    one_step: OneStep = field(default_factory=OneStep)
    controlnet: ControlNetStage = field(default_factory=ControlNetStage)
    resolution: int = 512
    teacher: Optional[str] = None       # diffusers folder of the teacher pipeline
    teacher_controlnet: Optional[str] = None

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d):
        kinds = {"runtime": Runtime, "decoder": DecoderDistill, "unet": BlockRemoval,
                 "one_step": OneStep, "controlnet": ControlNetStage}
        kw = {}
        for k, v in d.items():
            if k not in {f.name for f in dataclasses.fields(cls)}:
                raise ValueError(f"unknown recipe field '{k}'")
            kw[k] = kinds[k](**v) if k in kinds else v
        return cls(**kw)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls.from_dict(json.load(f))
