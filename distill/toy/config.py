"""Sizes and step counts of the toy run: a 64x64 shapes world, a teacher trained from scratch
and the four SDXS stages, sized to finish in about two hours on two CPU cores.

`scaled(recipe, f)` multiplies every step and pair count by f (at least one step each), for the
quick end-to-end check the tests and `--scale` use.
"""
import copy
import dataclasses

from distill.config import (BlockRemoval, ControlNetStage, DecoderDistill, OneStep, Recipe,
                            Runtime)

IMAGE_SIZE = 64          # pixels; latents are 8x8x4
TRAIN_IMAGES = 20_000
NAME = "sdxs-tiny-shapes"

# The CLIP text model: the real 49,408-token vocabulary, narrow and shallow.
TEXT_ENCODER = dict(vocab_size=49408, hidden_size=64, intermediate_size=256,
                    num_hidden_layers=3, num_attention_heads=2, max_position_embeddings=77,
                    hidden_act="quick_gelu", projection_dim=64, bos_token_id=49406,
                    eos_token_id=49407, pad_token_id=49407)

TEACHER_UNET = dict(
    sample_size=IMAGE_SIZE // 8, in_channels=4, out_channels=4,
    block_out_channels=[64, 128, 128], layers_per_block=2,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=64, attention_head_dim=4,
    use_linear_projection=True, norm_num_groups=32)

TEACHER_AE = dict(encoder_block_out_channels=[32] * 4, num_encoder_blocks=[1, 1, 2, 2],
                  decoder_block_out_channels=[32] * 4, num_decoder_blocks=[2, 2, 2, 1],
                  latent_channels=4)

# The training schedule of Stable Diffusion; the shipped model samples it with one Euler step.
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                 beta_schedule="scaled_linear", prediction_type="epsilon", steps_offset=1,
                 timestep_spacing="trailing")

TEACHER_AE_TRAIN = dict(steps=5000, batch=32, lr=1e-3, latent_noise=0.1, crop=32)
TEACHER_LDM_TRAIN = dict(steps=5000, batch=32, lr=6e-4, caption_dropout=0.1,
                         min_snr_gamma=5.0, ema_decay=0.995)
TEACHER_SAMPLING = dict(steps=20, guidance=3.0)  # how the teacher is evaluated


def recipe(seed=0, threads=1):
    return Recipe(
        runtime=Runtime(seed=seed, device="cpu", dtype="fp32", threads=threads,
                        deterministic=True, log_every=50),
        resolution=IMAGE_SIZE,
        decoder=DecoderDistill(channels=24, blocks=[1, 1, 1, 1], steps=1200, batch=32, lr=1e-3,
                               disc_lr=1e-3, downsample=2, gan_weight=0.05, gan_start=400,
                               disc_channels=32, latent_noise=0.1),
        unet=BlockRemoval(drop_mid=True, drop_levels=1, layers_per_block=1, steps=500,
                          batch=32, lr=3e-4, caption_dropout=0.1, ema_decay=0.99),
        one_step=OneStep(pairs=1024, ode_steps=12, ode_guidance=3.0, pair_batch=256,
                         fm_steps=500, fm_t_final_prob=0.5, fm_feature_t=0,
                         fm_weights=[1.0, 0.5, 0.5, 0.5, 0.5, 0.5], ssd_steps=200, alpha=0.5,
                         t_min=20, real_guidance=3.0, w_fm_start=1.0, w_fm_end=0.5, w_sd=0.5,
                         batch=32, lr=1e-4, fake_lr=1e-4, fake_updates=1),
        controlnet=ControlNetStage(cond_channels=[16, 32, 64, 64], teacher_steps=400,
                                   teacher_batch=32, teacher_lr=3e-4, caption_dropout=0.1,
                                   pairs=512, ode_steps=12, ode_guidance=3.0, steps=200,
                                   batch=32, lr=1e-4, fake_lr=1e-4, alpha=0.5, t_min=20,
                                   real_guidance=3.0, w_fm=1.0, w_sd=0.5))


def scaled(r, f):
    """A copy of recipe r with every step/pair count multiplied by f (minimum 1)."""
    r = copy.deepcopy(r)
    counts = {"steps", "fm_steps", "ssd_steps", "teacher_steps", "pairs"}
    for part in (r.decoder, r.unet, r.one_step, r.controlnet):
        for fld in dataclasses.fields(part):
            if fld.name in counts:
                setattr(part, fld.name, max(1, int(getattr(part, fld.name) * f)))
    # Pairs are drawn in whole batches: keep at least one batch of them.
    r.one_step.pairs = max(r.one_step.pairs, r.one_step.batch)
    r.controlnet.pairs = max(r.controlnet.pairs, r.controlnet.batch)
    return r


def scaled_train(settings, f):
    """A copy of a teacher training dict with its step count multiplied by f (minimum 1)."""
    out = dict(settings)
    out["steps"] = max(1, int(out["steps"] * f))
    return out
