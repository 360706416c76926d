"""Stage c: one-step training of the compressed U-Net.

1. Pairs: the teacher's deterministic ODE sampler maps noise z to a clean latent x0(z) for
   captions of the data set (classifier-free guidance included).
2. Feature matching on the straightened trajectory: the pair defines the straight path
   x_t = sqrt(a_t) x0(z) + sqrt(1 - a_t) z. The student's clean-sample prediction at points of
   that path (and always at t = T-1, the one-step input) is pulled to x0(z) in the feature space
   of a frozen network: the latent itself plus the teacher U-Net's down-path features.
3. Segmented score distillation: the one-step sample G(z) is noised to t < alpha*T (the
   low-noise, detail-carrying part of the trajectory) and moved along the Diff-Instruct / DMD
   gradient (fake score - real score); an online fake-score network, initialised from the
   teacher, keeps fitting the student's samples. The high-noise part gets no score gradient: the
   feature-matching loss to the pairs, whose weight decays linearly, covers it.
"""
import copy

import torch

from distill import losses
from distill.common import LossLog, Noise, autocast, cycle_batches, device_of
from distill.components import guided_eps, one_step, sample_ode, unet_down_features


@torch.no_grad()
def make_pairs(unet, text, scheduler_config, data, n, latent_shape, steps, guidance, batch, rt,
               controlnet=None, seed_offset=303):
    """n (noise, teacher ODE sample) pairs for captions (and edges) drawn from data.
    Returns a dict: z, x0 (n, *latent_shape) float; captions; idx (the data items);
    control (n, 1, H, W) uint8 edges when a ControlNet is given."""
    dev = device_of(rt.device)
    gen = torch.Generator().manual_seed(rt.seed + seed_offset)
    idx = torch.randint(0, len(data), (n,), generator=gen)
    z = torch.randn((n, *latent_shape), generator=gen)
    uncond = text([""])
    x0, ctrl, caps = [], [], []
    log = LossLog(None, "pairs", max(1, rt.log_every // 10), (n + batch - 1) // batch)
    for k, i in enumerate(range(0, n, batch)):
        b = data.get(idx[i:i + batch].numpy(), control=controlnet is not None, device=dev)
        ctx = text(b["captions"])
        control = b.get("control")
        with autocast(rt):
            out = sample_ode(unet, scheduler_config, z[i:i + batch].to(dev), ctx, uncond, steps,
                             guidance, controlnet, control)
        x0.append(out.float().cpu())
        caps += b["captions"]
        if control is not None:
            ctrl.append((control[:, :1] * 255).round().to(torch.uint8).cpu())
        log.add(k, std=out.float().std().item())
    pairs = {"z": z, "x0": torch.cat(x0), "captions": caps, "idx": idx}
    if ctrl:
        pairs["control"] = torch.cat(ctrl)
    return pairs


def pair_batch(pairs, sel, dev):
    """One batch of pairs on the device: z, x0, captions, and control (B, 3, H, W) in [0, 1]."""
    b = {"z": pairs["z"][sel].to(dev), "x0": pairs["x0"][sel].to(dev),
         "captions": [pairs["captions"][int(i)] for i in sel]}
    if "control" in pairs:
        b["control"] = pairs["control"][sel].float().div(255).expand(-1, 3, -1, -1).to(dev)
    return b


class FeatureSpace:
    """The feature-matching distance: sum_l w_l * mean((f_l(a) - f_l(b))^2) / mean(f_l(b)^2)
    over the latent (l = 0) and the frozen teacher U-Net's down-path features at a fixed small
    timestep. Each term is normalised by the target's power so that the weights compare."""

    def __init__(self, teacher_unet, noise, weights, t_feature):
        self.unet, self.noise, self.weights = teacher_unet, noise, list(weights)
        self.t = int(t_feature)

    def features(self, x0, ctx):
        feats = [x0]
        if len(self.weights) > 1:
            t = torch.full((x0.shape[0],), self.t, device=x0.device, dtype=torch.long)
            sa, _ = self.noise.coeffs(t, x0.ndim)
            feats += unet_down_features(self.unet, sa * x0, t, ctx)
            if len(feats) != len(self.weights):
                raise ValueError(f"fm_weights has {len(self.weights)} entries; the latent and "
                                 f"the teacher's features make {len(feats)}")
        return feats

    def loss(self, x0, x0_target, ctx):
        fa = self.features(x0, ctx)
        with torch.no_grad():
            fb = self.features(x0_target, ctx)
        w = [wi / (b.float().pow(2).mean().item() + 1e-8) for wi, b in zip(self.weights, fb)]
        return losses.feature_matching_loss(fa, fb, w)


def train_one_step(student, teacher_unet, text, scheduler_config, pairs, cfg, rt,
                   log_path=None):
    """Feature-matching warm-up then segmented score distillation; returns the student."""
    dev = device_of(rt.device)
    teacher_unet = teacher_unet.to(dev).eval().requires_grad_(False)
    text.model.to(dev).eval().requires_grad_(False)
    student = student.to(dev).train()
    noise = Noise(scheduler_config, dev)
    space = FeatureSpace(teacher_unet, noise, cfg.fm_weights, cfg.fm_feature_t)
    gen = torch.Generator().manual_seed(rt.seed + 404)
    batches = cycle_batches(len(pairs["captions"]), cfg.batch, gen)
    T = noise.num_train_timesteps
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)

    # 1. Feature matching on the straightened trajectory.
    log = LossLog(log_path, "c_fm", rt.log_every, cfg.fm_steps)
    for step in range(cfg.fm_steps):
        b = pair_batch(pairs, next(batches), dev)
        with torch.no_grad():
            ctx = text(b["captions"])
        B = b["z"].shape[0]
        t = torch.randint(0, T, (B,), generator=gen)
        t[torch.rand(B, generator=gen) < cfg.fm_t_final_prob] = T - 1
        t = t.to(dev)
        with autocast(rt):
            _, sb = noise.coeffs(t)
            # At T-1 the input is exactly the one-step generator's (z * sqrt(1 - a_T)).
            x_t = torch.where((t == T - 1).view(-1, 1, 1, 1), b["z"] * sb,
                              noise.add(b["x0"], b["z"], t))
            x0 = noise.x0_from_eps(x_t, student(x_t, t, ctx).sample.float(), t)
            loss = space.loss(x0, b["x0"], ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        log.add(step, fm=loss.item())
    log.close()
    if cfg.ssd_steps <= 0:
        return student.eval()

    # 2. Segmented score distillation with an online fake score.
    fake = copy.deepcopy(teacher_unet).train().requires_grad_(True)
    opt_f = torch.optim.AdamW(fake.parameters(), lr=cfg.fake_lr, weight_decay=0.0)
    for group in opt.param_groups:
        group["lr"] = cfg.lr
    with torch.no_grad():
        uncond = text([""])
    t_hi = max(cfg.t_min + 1, int(cfg.alpha * T))
    log = LossLog(log_path, "c_ssd", rt.log_every, cfg.ssd_steps)
    for step in range(cfg.ssd_steps):
        b = pair_batch(pairs, next(batches), dev)
        with torch.no_grad():
            ctx = text(b["captions"])
        B = b["z"].shape[0]
        w_fm = cfg.w_fm_start + (cfg.w_fm_end - cfg.w_fm_start) * step / max(1,
                                                                            cfg.ssd_steps - 1)
        with autocast(rt):
            x0 = one_step(student, noise, b["z"], ctx).float()
            l_fm = space.loss(x0, b["x0"], ctx)
            l_sd = _score_loss(x0, teacher_unet, fake, noise, ctx, uncond, cfg.real_guidance,
                               cfg.t_min, t_hi, gen)
            loss = w_fm * l_fm + cfg.w_sd * l_sd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        l_fake = _fake_update(fake, opt_f, x0.detach(), noise, ctx, cfg.t_min, t_hi, gen, rt,
                              cfg.fake_updates)
        log.add(step, fm=l_fm.item(), sd=l_sd.item(), fake=l_fake)
    log.close()
    return student.eval()


def _score_loss(x0, real, fake, noise, ctx, uncond, guidance, t_lo, t_hi, gen,
                controls=(None, None, None)):
    """Diff-Instruct / DMD generator loss at t in [t_lo, t_hi). controls = (control image,
    real ControlNet, fake ControlNet) for stage d."""
    control, real_cn, fake_cn = controls
    B = x0.shape[0]
    t = torch.randint(t_lo, t_hi, (B,), generator=gen).to(x0.device)
    n = torch.randn(x0.shape, generator=gen).to(x0.device)
    with torch.no_grad():
        x_t = noise.add(x0.detach(), n, t)
        eps_real = guided_eps(real, x_t, t, ctx, uncond, guidance, real_cn, control).float()
        if fake_cn is None:
            eps_fake = fake(x_t, t, ctx).sample.float()
        else:
            down, mid = fake_cn(x_t, t, ctx, control, return_dict=False)
            eps_fake = fake(x_t, t, ctx, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid).sample.float()
        x0_real = noise.x0_from_eps(x_t, eps_real, t)
        x0_fake = noise.x0_from_eps(x_t, eps_fake, t)
    return losses.score_distillation_loss(x0, x0_real, x0_fake)


def _fake_update(fake, opt_f, x0, noise, ctx, t_lo, t_hi, gen, rt, updates, control=None,
                 fake_cn=None):
    """Denoising steps of the fake-score network on the generator's samples; returns the loss."""
    total = 0.0
    for _ in range(updates):
        t = torch.randint(t_lo, t_hi, (x0.shape[0],), generator=gen).to(x0.device)
        n = torch.randn(x0.shape, generator=gen).to(x0.device)
        x_t = noise.add(x0, n, t)
        with autocast(rt):
            if fake_cn is None:
                pred = fake(x_t, t, ctx).sample
            else:
                down, mid = fake_cn(x_t, t, ctx, control, return_dict=False)
                pred = fake(x_t, t, ctx, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid).sample
            loss = losses.diffusion_loss(pred, n)
        opt_f.zero_grad(set_to_none=True)
        loss.backward()
        opt_f.step()
        total += loss.item()
    return total / updates
