"""Training a teacher from scratch, for the toy run (at full scale the teacher is a published
Stable Diffusion checkpoint): an AutoencoderTiny autoencoder, then a text encoder and U-Net
trained together with the denoising loss on its latents.
"""
import torch
import torch.nn.functional as F

from distill import losses
from distill.common import EMA, LossLog, Noise, cycle_batches, device_of, lr_lambda


def random_crops(x, crop, gen, align=8):
    """One random crop x crop window per image of x (B, C, H, W), at offsets that are multiples
    of `align` (so that latent and pixel crops line up)."""
    if not crop or crop >= x.shape[-1]:
        return x
    n = (x.shape[-1] - crop) // align + 1
    off = torch.randint(0, n, (x.shape[0], 2), generator=gen) * align
    return torch.stack([img[:, oy:oy + crop, ox:ox + crop]
                        for img, (oy, ox) in zip(x, off.tolist())])


def train_autoencoder(vae, data, steps, batch, lr, latent_noise, rt, log_path=None, crop=None):
    """Trains encoder and decoder to reconstruct the images (L1 + MSE), on random crop x crop
    windows when crop is given (the networks are convolutional; crops cost a fraction). Gaussian
    noise on the latents during training makes the decoder tolerant of the imperfect latents a
    U-Net produces. Afterwards sets scaling_factor so that the scaled latents of the data have
    unit variance."""
    dev = device_of(rt.device)
    vae.to(dev).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(min(200, steps // 10 + 1), steps))
    gen = torch.Generator().manual_seed(rt.seed + 11)
    batches = cycle_batches(len(data), batch, gen)
    log = LossLog(log_path, "teacher_ae", rt.log_every, steps)
    for step in range(steps):
        x = random_crops(data.get(next(batches))["pixels"], crop, gen).to(dev)
        z = vae.encode(x).latents
        z_in = z + latent_noise * z.detach().std() * torch.randn(z.shape, generator=gen).to(dev)
        y = vae.decode(z_in).sample
        l1 = (y - x).abs().mean()
        l2 = F.mse_loss(y, x)
        loss = l1 + l2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Without a cap on the gradient norm, a 5,000-step run at lr 2e-3 blew up at step 1,700
        # (the loss went from 0.04 to 0.6 and stayed there).
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        log.add(step, l1=l1.item(), mse=l2.item())
    log.close()
    vae.eval()
    with torch.no_grad():
        idx = torch.randperm(len(data), generator=gen)[:1024].numpy()
        z = vae.encode(data.get(idx, device=dev)["pixels"]).latents
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae


def train_ldm(unet, text, scheduler_config, data, steps, batch, lr, caption_dropout,
              min_snr_gamma, ema_decay, rt, log_path=None):
    """Trains the U-Net and the text model together on the data's cached latents. Captions are
    dropped to "" with probability caption_dropout (for classifier-free guidance). The returned
    models hold the EMA weights."""
    dev = device_of(rt.device)
    unet.to(dev).train()
    text.model.to(dev).train()
    params = list(unet.parameters()) + list(text.model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(min(500, steps // 10 + 1), steps))
    ema_u, ema_t = EMA(unet, ema_decay), EMA(text.model, ema_decay)
    noise = Noise(scheduler_config, dev)
    gen = torch.Generator().manual_seed(rt.seed + 22)
    batches = cycle_batches(len(data), batch, gen)
    log = LossLog(log_path, "teacher_ldm", rt.log_every, steps)
    for step in range(steps):
        b = data.get(next(batches), device=dev)
        lat = b["latents"]
        caps = [("" if torch.rand((), generator=gen) < caption_dropout else c)
                for c in b["captions"]]
        t = torch.randint(0, noise.num_train_timesteps, (lat.shape[0],), generator=gen).to(dev)
        eps = torch.randn(lat.shape, generator=gen).to(dev)
        pred = unet(noise.add(lat, eps, t), t, text(caps)).sample
        loss = losses.diffusion_loss(pred, eps, noise.snr(t), min_snr_gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema_u.update(unet)
        ema_t.update(text.model)
        log.add(step, eps=loss.item())
    log.close()
    ema_u.copy_to(unet)
    ema_t.copy_to(text.model)
    return unet.eval(), text
