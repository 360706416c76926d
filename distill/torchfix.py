"""A guard against a PyTorch 1.13 CPU behaviour that diffusers' attention runs into.

diffusers 0.27's `Attention.get_attention_scores` (the processor used with torch < 2) allocates
its `baddbmm` input with `torch.empty` and passes `beta=0`. On the CPU, torch 1.13 still reads
that input in some cases, so when the recycled memory happens to hold NaN or infinity bit
patterns the attention scores become NaN (seen in about 1 call in 5 on a tiny random U-Net in a
fresh process). With beta = 0 the input must not matter, so `install()` makes `torch.baddbmm`
compute `alpha * (batch1 @ batch2)` by `torch.bmm` whenever beta is 0, and leaves every other
call as it was. The tests and the training runs install it before building any model.
"""
import torch

_original = None


def _baddbmm(input, batch1, batch2, *, beta=1, alpha=1, out=None):
    if beta == 0 and out is None:
        prod = torch.bmm(batch1, batch2)
        return prod if alpha == 1 else prod * alpha
    if out is None:
        return _original(input, batch1, batch2, beta=beta, alpha=alpha)
    return _original(input, batch1, batch2, beta=beta, alpha=alpha, out=out)


def install():
    """Idempotent; returns nothing."""
    global _original
    if _original is None:
        _original = torch.baddbmm
        torch.baddbmm = _baddbmm
