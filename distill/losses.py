"""The losses of the SDXS recipe, each a plain function of tensors so that it can be tested alone.

  diffusion_loss              epsilon-prediction MSE, optionally min-SNR weighted (teacher, task)
  output_distill_loss         L1 between student and teacher decoder images after average-pool
                              downsampling (stage a)
  hinge_d_loss, hinge_g_loss  the adversarial pair of the patch discriminator (stage a)
  feature_distill_loss        MSE between paired intermediate features (stage b, BK-SDM style)
  feature_matching_loss       weighted MSE over the layers of a frozen feature network (stage c)
  score_distillation_loss     Diff-Instruct / DMD generator loss from a real (teacher) and a fake
                              (online) denoiser (stage c, d)
"""
import torch
import torch.nn.functional as F


def diffusion_loss(eps_pred, eps, snr=None, min_snr_gamma=None):
    """Mean squared error of the predicted noise. With min_snr_gamma, each sample is weighted by
    min(SNR, gamma) / SNR (Hang et al., 2023), which speeds up training of epsilon models."""
    per = (eps_pred.float() - eps.float()).pow(2).flatten(1).mean(1)
    if min_snr_gamma is None:
        return per.mean()
    w = torch.clamp(snr, max=min_snr_gamma) / snr
    return (w * per).mean()


def output_distill_loss(student_img, teacher_img, downsample):
    """L1 between the two decoders' images after `downsample`x average pooling: the student has to
    match the teacher's colours and layout; the fine detail is left to the adversarial loss."""
    if downsample > 1:
        student_img = F.avg_pool2d(student_img, downsample)
        teacher_img = F.avg_pool2d(teacher_img, downsample)
    return (student_img.float() - teacher_img.float()).abs().mean()


def hinge_d_loss(real_logits, fake_logits):
    return F.relu(1 - real_logits.float()).mean() + F.relu(1 + fake_logits.float()).mean()


def hinge_g_loss(fake_logits):
    return -fake_logits.float().mean()


def feature_distill_loss(student_feats, teacher_feats):
    """Sum over paired layers of the mean squared difference (the teacher side is detached)."""
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(f"feature lists differ: {len(student_feats)} vs {len(teacher_feats)}")
    total = 0.0
    for s, t in zip(student_feats, teacher_feats):
        if s.shape != t.shape:
            raise ValueError(f"paired features differ in shape: {tuple(s.shape)} vs "
                             f"{tuple(t.shape)}")
        total = total + (s.float() - t.detach().float()).pow(2).mean()
    return total


def feature_matching_loss(feats_a, feats_b, weights):
    """sum_l w_l * mean((f_l(a) - f_l(b))^2): the distance the one-step student is trained with,
    measured in the layers of a frozen network rather than on the latent alone."""
    if not (len(feats_a) == len(feats_b) == len(weights)):
        raise ValueError("feature lists and weights differ in length")
    total = 0.0
    for a, b, w in zip(feats_a, feats_b, weights):
        total = total + w * (a.float() - b.detach().float()).pow(2).mean()
    return total


def score_distillation_loss(x0, x0_real, x0_fake):
    """The generator side of Diff-Instruct / DMD.

    x0 is the generator's sample; x0_real and x0_fake are what the teacher (real score) and the
    online fake-score network predict as the clean sample from the same noised x_t. The
    gradient that moves the generator's distribution towards the teacher's is (x0_fake - x0_real),
    normalised per sample by the mean distance to the teacher's prediction (DMD's weighting,
    which keeps the step size independent of t). It is applied through the surrogate
    0.5 * ||x0 - stopgrad(x0 - grad)||^2, whose gradient in x0 is exactly `grad`.
    """
    with torch.no_grad():
        norm = (x0.float() - x0_real.float()).abs().flatten(1).mean(1).clamp_min(1e-6)
        grad = (x0_fake.float() - x0_real.float()) / norm.view(-1, *([1] * (x0.ndim - 1)))
        grad = torch.nan_to_num(grad)
        target = x0.detach().float() - grad
    return 0.5 * F.mse_loss(x0.float(), target, reduction="sum") / x0.shape[0]
