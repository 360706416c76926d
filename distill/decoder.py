"""Stage a: tiny decoder distillation.

A small AutoencoderTiny decoder learns to reproduce the teacher's decoder: an L1 output loss on
average-pooled images (colours and layout) plus a hinge adversarial loss from a patch
discriminator that compares its images with real ones (sharp detail). When the teacher's
autoencoder is not an AutoencoderTiny (a KL autoencoder at full scale), the tiny encoder is
distilled too, by regressing the teacher's latents, so that image-to-image works with the result.
"""
import torch
import torch.nn as nn

from distill import losses
from distill.common import LossLog, cycle_batches, device_of
from distill.components import decode_latents, encode_latents


class PatchDiscriminator(nn.Module):
    """A PatchGAN: strided 4x4 convolutions, group norm and leaky ReLU, one logit per patch."""

    def __init__(self, channels=64, layers=3):
        super().__init__()
        mods = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for _ in range(layers - 1):
            mods += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.GroupNorm(8, ch * 2), nn.LeakyReLU(0.2)]
            ch *= 2
        mods.append(nn.Conv2d(ch, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x):  # x: (B, 3, H, W) in [-1, 1] -> (B, 1, H / 2^layers, W / 2^layers)
        return self.net(x)


def student_vae(teacher_vae, cfg):
    """The student autoencoder: the teacher's tiny encoder (when it has one) with a decoder of
    cfg.channels x len(cfg.blocks) levels; the latent scaling of the teacher's U-Net space."""
    from diffusers import AutoencoderTiny
    tc = teacher_vae.config
    levels = len(cfg.blocks)
    if type(teacher_vae).__name__ == "AutoencoderTiny":
        enc_ch, enc_blocks = list(tc.encoder_block_out_channels), list(tc.num_encoder_blocks)
        scaling = tc.scaling_factor
    else:  # a KL teacher: TAESD's encoder shape, latents taken as the U-Net sees them
        enc_ch, enc_blocks, scaling = [64] * levels, [1] + [3] * (levels - 1), 1.0
    vae = AutoencoderTiny(encoder_block_out_channels=enc_ch, num_encoder_blocks=enc_blocks,
                          decoder_block_out_channels=[cfg.channels] * levels,
                          num_decoder_blocks=list(cfg.blocks),
                          latent_channels=tc.latent_channels, scaling_factor=scaling)
    if type(teacher_vae).__name__ == "AutoencoderTiny":
        vae.encoder.load_state_dict(teacher_vae.encoder.state_dict())
    return vae


def distill_decoder(teacher_vae, data, cfg, rt, log_path=None, encoder_steps=None):
    """Trains and returns the student AutoencoderTiny (see student_vae). `data` is a source of
    distill.data; cached latents are used when it has them."""
    dev = device_of(rt.device)
    teacher_vae = teacher_vae.to(dev).eval().requires_grad_(False)
    vae = student_vae(teacher_vae, cfg).to(dev)
    disc = PatchDiscriminator(cfg.disc_channels, layers=3 if cfg.downsample >= 8 else 2).to(dev)
    opt_g = torch.optim.AdamW(vae.decoder.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
    gen = torch.Generator().manual_seed(rt.seed + 101)
    batches = cycle_batches(len(data), cfg.batch, gen)
    log = LossLog(log_path, "a_decoder", rt.log_every, cfg.steps)

    for step in range(cfg.steps):
        b = data.get(next(batches), device=dev)
        with torch.no_grad():
            lat = b.get("latents")
            if lat is None:
                lat = encode_latents(teacher_vae, b["pixels"])
            if cfg.latent_noise > 0:
                lat = lat + cfg.latent_noise * torch.randn(lat.shape, generator=gen).to(dev)
            target = decode_latents(teacher_vae, lat)

        # Generator: match the teacher's pooled image, fool the discriminator.
        img = decode_latents(vae, lat)
        l_out = losses.output_distill_loss(img, target, cfg.downsample)
        loss = l_out
        use_gan = cfg.gan_weight > 0 and step >= cfg.gan_start
        l_g = torch.zeros(())
        if use_gan:
            l_g = losses.hinge_g_loss(disc(img))
            loss = loss + cfg.gan_weight * l_g
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.decoder.parameters(), 1.0)
        opt_g.step()

        # Discriminator: real images against the student's.
        l_d = torch.zeros(())
        if use_gan:
            l_d = losses.hinge_d_loss(disc(b["pixels"]), disc(img.detach().clamp(-1, 1)))
            opt_d.zero_grad(set_to_none=True)
            l_d.backward()
            opt_d.step()
        log.add(step, out=l_out.item(), gan_g=l_g.item(), gan_d=l_d.item())
    log.close()

    if type(teacher_vae).__name__ != "AutoencoderTiny":
        _distill_encoder(teacher_vae, vae, data, cfg, rt, dev, gen,
                         encoder_steps if encoder_steps is not None else cfg.steps, log_path)
    return vae.eval()


def _distill_encoder(teacher_vae, vae, data, cfg, rt, dev, gen, steps, log_path):
    """Regresses the student encoder's latents onto the teacher's (MSE in U-Net latent space)."""
    opt = torch.optim.AdamW(vae.encoder.parameters(), lr=cfg.lr)
    batches = cycle_batches(len(data), cfg.batch, gen)
    log = LossLog(log_path, "a_encoder", rt.log_every, steps)
    for step in range(steps):
        b = data.get(next(batches), device=dev)
        with torch.no_grad():
            target = encode_latents(teacher_vae, b["pixels"])
        loss = (encode_latents(vae, b["pixels"]) - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.add(step, enc=loss.item())
    log.close()
