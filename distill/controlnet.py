"""Stage d: ControlNet for the one-step student.

1. The teacher's ControlNet: a ControlNetModel copied from the teacher U-Net's down path and
   trained with the denoising loss on (latents, captions, Canny edges), the U-Net frozen. (At full
   scale a published teacher ControlNet can be loaded instead.)
2. The student's ControlNet: its configuration and initial weights come from the teacher's
   ControlNet by the same block removal as the U-Net (the mid block stays: the student U-Net has
   none, but diffusers and the engine still add the mid residual at its bottleneck).
3. One-step training beside the frozen one-step U-Net: feature matching to the teacher's
   controlled ODE samples, plus score distillation whose real score is the teacher U-Net with
   the teacher's ControlNet, and whose fake score (U-Net and ControlNet) is trained online.
"""
import copy

import torch

from distill import block_removal, losses
from distill.common import LossLog, Noise, autocast, cycle_batches, device_of
from distill.components import batch_latents, one_step, unet_eps
from distill.onestep import FeatureSpace, _fake_update, _score_loss, pair_batch


def train_teacher_controlnet(teacher_unet, text, scheduler_config, data, cfg, rt,
                             log_path=None, vae=None):
    """Returns the teacher's ControlNetModel trained on the data's edges."""
    from diffusers import ControlNetModel
    dev = device_of(rt.device)
    teacher_unet = teacher_unet.to(dev).eval().requires_grad_(False)
    text.model.to(dev).eval().requires_grad_(False)
    cn = ControlNetModel.from_unet(teacher_unet,
                                   conditioning_embedding_out_channels=tuple(cfg.cond_channels))
    cn.to(dev).train()
    noise = Noise(scheduler_config, dev)
    opt = torch.optim.AdamW(cn.parameters(), lr=cfg.teacher_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(rt.seed + 505)
    batches = cycle_batches(len(data), cfg.teacher_batch, gen)
    log = LossLog(log_path, "d_teacher_cn", rt.log_every, cfg.teacher_steps)
    for step in range(cfg.teacher_steps):
        b = data.get(next(batches), control=True, device=dev)
        lat = batch_latents(b, vae)
        caps = [("" if torch.rand((), generator=gen) < cfg.caption_dropout else c)
                for c in b["captions"]]
        t = torch.randint(0, noise.num_train_timesteps, (lat.shape[0],), generator=gen).to(dev)
        eps = torch.randn(lat.shape, generator=gen).to(dev)
        with torch.no_grad():
            ctx = text(caps)
        with autocast(rt):
            pred = unet_eps(teacher_unet, noise.add(lat, eps, t), t, ctx, cn, b["control"])
            loss = losses.diffusion_loss(pred, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.add(step, eps=loss.item())
    log.close()
    return cn.eval()


def student_controlnet(teacher_cn, student_unet):
    """The student's ControlNetModel, block-removed from the teacher's to fit student_unet.
    Returns (controlnet, copied keys, kept keys)."""
    from diffusers import ControlNetModel
    n_t = len(teacher_cn.config.down_block_types)
    n_s = len(student_unet.config.down_block_types)
    cfg = block_removal.derive_student_config(
        teacher_cn.config, drop_mid=False, drop_levels=n_t - n_s,
        layers_per_block=student_unet.config.layers_per_block)
    cn = ControlNetModel.from_config(cfg)
    with torch.no_grad():
        copied, kept = block_removal.map_weights(
            cn, teacher_cn, block_removal.controlnet_module_map(teacher_cn.config, cfg))
    return cn, copied, kept


def train_student_controlnet(student_unet, student_cn, teacher_unet, teacher_cn, fake_unet,
                             text, scheduler_config, pairs, cfg, fm_weights, fm_feature_t, rt,
                             log_path=None):
    """One-step training of student_cn beside the frozen student U-Net (see the module text).
    fake_unet initialises the fake score's U-Net (the teacher's, or stage c's fake)."""
    dev = device_of(rt.device)
    for m in (student_unet, teacher_unet, teacher_cn):
        m.to(dev).eval().requires_grad_(False)
    text.model.to(dev).eval().requires_grad_(False)
    student_cn.to(dev).train()
    noise = Noise(scheduler_config, dev)
    space = FeatureSpace(teacher_unet, noise, fm_weights, fm_feature_t)
    fake = copy.deepcopy(fake_unet).to(dev).train().requires_grad_(True)
    fake_cn = copy.deepcopy(teacher_cn).train().requires_grad_(True)
    opt = torch.optim.AdamW(student_cn.parameters(), lr=cfg.lr, weight_decay=0.0)
    opt_f = torch.optim.AdamW(list(fake.parameters()) + list(fake_cn.parameters()),
                              lr=cfg.fake_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(rt.seed + 606)
    batches = cycle_batches(len(pairs["captions"]), cfg.batch, gen)
    with torch.no_grad():
        uncond = text([""])
    T = noise.num_train_timesteps
    t_hi = max(cfg.t_min + 1, int(cfg.alpha * T))
    log = LossLog(log_path, "d_student_cn", rt.log_every, cfg.steps)
    for step in range(cfg.steps):
        b = pair_batch(pairs, next(batches), dev)
        with torch.no_grad():
            ctx = text(b["captions"])
        with autocast(rt):
            x0 = one_step(student_unet, noise, b["z"], ctx, student_cn, b["control"],
                          cfg.conditioning_scale).float()
            l_fm = space.loss(x0, b["x0"], ctx)
            l_sd = torch.zeros((), device=dev)
            if cfg.w_sd > 0:
                l_sd = _score_loss(x0, teacher_unet, fake, noise, ctx, uncond,
                                   cfg.real_guidance, cfg.t_min, t_hi, gen,
                                   (b["control"], teacher_cn, fake_cn))
            loss = cfg.w_fm * l_fm + cfg.w_sd * l_sd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student_cn.parameters(), 1.0)
        opt.step()
        l_fake = 0.0
        if cfg.w_sd > 0:
            l_fake = _fake_update(fake, opt_f, x0.detach(), noise, ctx, cfg.t_min, t_hi, gen,
                                  rt, 1, b["control"], fake_cn)
        log.add(step, fm=l_fm.item(), sd=l_sd.item(), fake=l_fake)
    log.close()
    return student_cn.eval()
