"""The model-side building blocks every stage shares: text encoding, latent encoding and decoding,
the U-Net called with or without a ControlNet and with classifier-free guidance, the teacher's ODE
sampler, the one-step generator, and the down-path features used for feature matching.

The one-step generator is exactly what the shipped scheduler (EulerDiscrete, 'trailing' spacing,
one step at t = T-1) computes in a diffusers pipeline, so a student trained here behaves the same
when loaded by diffusers or by the C engine.
"""
import torch
import torch.nn.functional as F


class TextEncoder:
    """A tokenizer and text model pair; token ids of repeated captions are cached."""

    def __init__(self, tokenizer, model):
        self.tokenizer, self.model = tokenizer, model
        self._ids = {}

    def ids(self, captions):
        missing = [c for c in set(captions) if c not in self._ids]
        if missing:
            tok = self.tokenizer(missing, padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt")
            for c, row in zip(missing, tok.input_ids):
                self._ids[c] = row
        return torch.stack([self._ids[c] for c in captions])

    def __call__(self, captions):
        dev = next(self.model.parameters()).device
        return self.model(self.ids(captions).to(dev))[0]  # last_hidden_state (B, 77, D)


def encode_latents(vae, pixels):
    """Pixels (B, 3, H, W) in [-1, 1] to the U-Net's latent space (scaled by scaling_factor)."""
    out = vae.encode(pixels)
    lat = out.latents if hasattr(out, "latents") else out.latent_dist.sample()
    return lat * vae.config.scaling_factor


def batch_latents(batch, vae):
    """A batch's U-Net latents: cached by the data source, else encoded by the frozen vae."""
    if "latents" in batch:
        return batch["latents"]
    if vae is None:
        raise ValueError("the data source has no cached latents and no autoencoder was given")
    with torch.no_grad():
        return encode_latents(vae, batch["pixels"])


def decode_latents(vae, latents):
    """U-Net latents back to pixels in [-1, 1] (not clamped), as the pipelines decode them."""
    return vae.decode(latents / vae.config.scaling_factor).sample


def unet_eps(unet, x, t, ctx, controlnet=None, control=None, scale=1.0):
    """The U-Net's epsilon prediction, with the ControlNet's residuals when one is given."""
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if controlnet is None:
        return unet(x, t, ctx).sample
    down, mid = controlnet(x, t, ctx, control, conditioning_scale=scale, return_dict=False)
    return unet(x, t, ctx, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample


def guided_eps(unet, x, t, ctx, uncond, guidance, controlnet=None, control=None):
    """Classifier-free guidance: uncond + g * (cond - uncond); guidance <= 1 means no guidance."""
    if guidance <= 1.0 or uncond is None:
        return unet_eps(unet, x, t, ctx, controlnet, control)
    both = unet_eps(unet, torch.cat([x, x]), torch.cat([t, t]) if t.ndim else t,
                    torch.cat([uncond.expand_as(ctx), ctx]), controlnet,
                    None if control is None else torch.cat([control, control]))
    e_u, e_c = both.chunk(2)
    return e_u + guidance * (e_c - e_u)


@torch.no_grad()
def sample_ode(unet, scheduler_config, z, ctx, uncond, steps, guidance, controlnet=None,
               control=None):
    """The teacher's deterministic sampler (DPM-Solver++ 2M): noise z (B, 4, h, w) to clean
    latents. These (z, x0) pairs are the straightened trajectories of the one-step stage."""
    from diffusers import DPMSolverMultistepScheduler
    sched = DPMSolverMultistepScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps, device=z.device)
    x = z * sched.init_noise_sigma
    for t in sched.timesteps:
        xin = sched.scale_model_input(x, t)
        eps = guided_eps(unet, xin, t.to(z.device), ctx, uncond, guidance, controlnet, control)
        x = sched.step(eps, t, x).prev_sample
    return x


def one_step(unet, noise, z, ctx, controlnet=None, control=None, scale=1.0):
    """The one-step generator: unit noise z to clean latents in a single U-Net pass at t = T-1.

    Equal to a pipeline with EulerDiscreteScheduler (timestep_spacing 'trailing') and one step:
    latents z * sigma, model input z * sqrt(1 - a_T), x0 = latents - sigma * eps."""
    t = torch.full((z.shape[0],), noise.num_train_timesteps - 1, device=z.device,
                   dtype=torch.long)
    _, sb = noise.coeffs(t, z.ndim)
    x_in = z * sb
    eps = unet_eps(unet, x_in, t, ctx, controlnet, control, scale)
    return noise.x0_from_eps(x_in, eps, t)


def unet_down_features(unet, x, t, ctx):
    """The outputs of conv_in and of every down block (and of the mid block when there is one) of
    a UNet2DConditionModel: the frozen feature network of the feature-matching loss."""
    if unet.config.class_embed_type or unet.config.addition_embed_type:
        raise NotImplementedError("feature extraction supports plain text-conditioned U-Nets")
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    emb = unet.time_embedding(unet.time_proj(t).to(x.dtype))
    h = unet.conv_in(x)
    feats = [h]
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=ctx)
        else:
            h, _ = block(hidden_states=h, temb=emb)
        feats.append(h)
    if unet.mid_block is not None:
        feats.append(unet.mid_block(h, emb, encoder_hidden_states=ctx))
    return feats


def canny_controls(images_uint8, low=100, high=200):
    """Control images for the edge ControlNet: cv2.Canny on the RGB array (as the engine's canny
    mode does), white edges on black, (B, 3, H, W) float in [0, 1]."""
    import cv2
    import numpy as np
    edges = np.stack([cv2.Canny(np.ascontiguousarray(im), low, high) for im in images_uint8])
    e = torch.from_numpy(edges).float().div(255)
    return e[:, None].expand(-1, 3, -1, -1).contiguous()


def resize_pixels(pixels, size):
    return pixels if pixels.shape[-1] == size else F.interpolate(pixels, size=(size, size),
                                                                 mode="area")
