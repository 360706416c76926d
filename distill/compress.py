"""Stage b: U-Net compression by block removal, trained with the task loss plus output and
feature-level distillation from the teacher (the combination BK-SDM introduced and SDXS uses).

    L = w_task * |eps_s - eps|^2 + w_out * |eps_s - eps_t|^2 + w_feat * sum_l |f_s,l - f_t,l|^2

where the features are the outputs of paired blocks (block_removal.feature_pairs).
"""
import torch

from distill import block_removal, losses
from distill.common import EMA, LossLog, Noise, cycle_batches, device_of
from distill.components import batch_latents


def compress_unet(teacher_unet, text, scheduler_config, data, cfg, rt, log_path=None, vae=None):
    """Returns (student UNet2DConditionModel, info dict with the weight-mapping counts). vae
    encodes the data's pixels when the source has no cached latents."""
    dev = device_of(rt.device)
    teacher_unet = teacher_unet.to(dev).eval().requires_grad_(False)
    text.model.to(dev).eval().requires_grad_(False)
    student, copied, kept = block_removal.build_student(
        teacher_unet, drop_mid=cfg.drop_mid, drop_levels=cfg.drop_levels,
        layers_per_block=cfg.layers_per_block)
    student.to(dev).train()
    pairs = block_removal.feature_pairs(teacher_unet.config, student.config)
    tap_s = block_removal.FeatureTap(student, [s for s, _ in pairs])
    tap_t = block_removal.FeatureTap(teacher_unet, [t for _, t in pairs])
    noise = Noise(scheduler_config, dev)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    ema = EMA(student, cfg.ema_decay) if cfg.ema_decay > 0 else None
    gen = torch.Generator().manual_seed(rt.seed + 202)
    batches = cycle_batches(len(data), cfg.batch, gen)
    log = LossLog(log_path, "b_unet", rt.log_every, cfg.steps)

    for step in range(cfg.steps):
        b = data.get(next(batches), device=dev)
        lat = batch_latents(b, vae)
        caps = [("" if torch.rand((), generator=gen) < cfg.caption_dropout else c)
                for c in b["captions"]]
        t = torch.randint(0, noise.num_train_timesteps, (lat.shape[0],), generator=gen).to(dev)
        eps = torch.randn(lat.shape, generator=gen).to(dev)
        x_t = noise.add(lat, eps, t)
        with torch.no_grad():
            ctx = text(caps)
            eps_t = teacher_unet(x_t, t, ctx).sample
            feat_t = tap_t.take()
        eps_s = student(x_t, t, ctx).sample
        feat_s = tap_s.take()
        l_task = losses.diffusion_loss(eps_s, eps)
        l_out = losses.diffusion_loss(eps_s, eps_t)
        l_feat = losses.feature_distill_loss(feat_s, feat_t)
        loss = cfg.w_task * l_task + cfg.w_out * l_out + cfg.w_feat * l_feat
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema:
            ema.update(student)
        log.add(step, task=l_task.item(), out=l_out.item(), feat=l_feat.item())
    log.close()
    tap_s.remove()
    tap_t.remove()
    if ema:
        ema.copy_to(student)
    info = {"copied_tensors": len(copied), "initialised_tensors": len(kept),
            "params": sum(p.numel() for p in student.parameters())}
    return student.eval(), info
