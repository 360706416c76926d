"""Counting the floating-point operations of one text-to-image run of a pipeline folder: the text
encoder on 77 tokens, one U-Net pass (plus the ControlNet when given) and the decoder.

Convolutions, linear layers and the two products of every attention are counted (a multiply-add
is two operations); normalisations, activations and element-wise additions are not (they are a
few percent at these sizes and are memory-bound anyway).
"""
import torch
import torch.nn as nn


class FlopCounter:
    """Forward hooks that add up the operations of convolutions, linears and attentions."""

    def __init__(self, model):
        from diffusers.models.attention_processor import Attention
        self.total = 0
        self.handles = []
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                self.handles.append(m.register_forward_hook(self._conv))
            elif isinstance(m, nn.Linear):
                self.handles.append(m.register_forward_hook(self._linear))
            elif isinstance(m, Attention):
                # QK^T and PV: 2 * 2 * B * Lq * Lk * inner. Lq is seen at to_q, Lk at to_k
                # (called in that order by every attention processor).
                self.handles.append(m.to_q.register_forward_hook(self._query))
                self.handles.append(m.to_k.register_forward_hook(self._key))
            elif type(m).__name__ == "CLIPAttention":
                self.handles.append(m.register_forward_hook(self._clip_attn))
        self._lq = 0

    def _conv(self, m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        self.total += 2 * out.numel() * k

    def _linear(self, m, inp, out):
        self.total += 2 * out.numel() * m.in_features

    def _query(self, m, inp, out):
        self._lq = out.numel() // m.out_features  # B * Lq

    def _key(self, m, inp, out):
        b = out.shape[0]
        lk = out.numel() // (m.out_features * b)
        self.total += 4 * self._lq * lk * m.out_features

    def _clip_attn(self, m, inp, out):
        b, length, d = out[0].shape  # called with keyword arguments: read the shape off the output
        self.total += 4 * b * length * length * d

    def remove(self):
        for h in self.handles:
            h.remove()


def _count(model, fn):
    c = FlopCounter(model)
    with torch.no_grad():
        fn()
    c.remove()
    return c.total


def pipeline_flops(text_encoder, unet, vae, controlnet=None, size=None):
    """Operations per image (batch 1) of each stage at size x size pixels (default: the U-Net's
    sample_size times 8). Returns a dict of counts and their sum under 'total'."""
    size = size or unet.config.sample_size * 8
    lat = size // 8
    ids = torch.zeros(1, 77, dtype=torch.long)
    ctx = torch.zeros(1, 77, text_encoder.config.hidden_size)
    x = torch.zeros(1, unet.config.in_channels, lat, lat)
    t = torch.tensor([999])
    out = {"text_encoder": _count(text_encoder, lambda: text_encoder(ids)),
           "unet": _count(unet, lambda: unet(x, t, ctx))}
    if controlnet is not None:
        ctrl = torch.zeros(1, 3, size, size)
        out["controlnet"] = _count(controlnet, lambda: controlnet(x, t, ctx, ctrl))
    out["decoder"] = _count(vae.decoder, lambda: vae.decoder(x))
    out["total"] = sum(v for k, v in out.items() if isinstance(v, int))
    return out
