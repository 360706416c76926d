"""Builds random-weight SDXS model folders (the diffusers layout the engine reads) from the
configurations in tests/ref/configs, deterministically from a seed.

Variants:
  dreamshaper, sdxs09        the real configurations at full size
  tiny-dreamshaper, tiny-09  the same architectures shrunk (narrow channels, 2 text layers), for
                             fast tests; every feature of the full model is still exercised
  sketch, tiny-sketch        ControlNet folders (config.json and weights) with the sketch
                             ControlNet's configuration, beside dreamshaper / tiny-dreamshaper;
  sketch-bin, tiny-sketch-bin  the same weights saved as PyTorch's diffusion_pytorch_model.bin
Each model folder also gets fp16 copies of its weights (*.fp16.safetensors).

Random weights from PyTorch's default initialisation make some stages degenerate (the tiny
decoder saturates, the U-Net output is tiny), which would let a comparison pass trivially. After
building, `condition()` rescales a few layers so that every stage the tests compare has a healthy
spread; tests assert that spread too. A ControlNet's zero-initialised layers (its zero
convolutions and the last layer of its conditioning embedding) get default random weights
instead, so that its residuals are not zero.

Usage: make_models.py OUT_DIR NAME [NAME ...]   (a folder that exists with the same stamp is kept)
"""
import copy
import hashlib
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(HERE, "configs")
sys.path.insert(0, HERE)
from tokenizer_files import write_tokenizer  # noqa: E402

VARIANTS = {
    "dreamshaper": ("sdxs-512-dreamshaper", False),
    "sdxs09": ("sdxs-512-0.9", False),
    "tiny-dreamshaper": ("sdxs-512-dreamshaper", True),
    "tiny-09": ("sdxs-512-0.9", True),
}
CONTROLNETS = {
    "sketch": ("sdxs-512-dreamshaper-sketch", False),
    "tiny-sketch": ("sdxs-512-dreamshaper-sketch", True),
}


def load(folder, name):
    with open(os.path.join(CONFIGS, folder, name)) as f:
        return json.load(f)


def shrink_unet(cfg):
    """Narrow channels and few heads, same block structure and options."""
    cfg = copy.deepcopy(cfg)
    cfg["block_out_channels"] = [32, 64, 64]
    cfg["norm_num_groups"] = 8
    ahd = cfg["attention_head_dim"]
    cfg["attention_head_dim"] = [2, 4, 4] if isinstance(ahd, list) else 2
    cfg["cross_attention_dim"] = 32
    cfg["sample_size"] = 16
    return cfg


def shrink_controlnet(cfg):
    """Matches shrink_unet; a narrow conditioning embedding with the same three halvings."""
    cfg = shrink_unet(cfg)
    del cfg["sample_size"]
    cfg["conditioning_embedding_out_channels"] = [8, 8, 16, 16]
    return cfg


def shrink_text(cfg):
    cfg = dict(cfg, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=2, projection_dim=32)
    return cfg


def shrink_vae(cfg):
    return dict(cfg, encoder_block_out_channels=[16, 16, 16, 16],
                decoder_block_out_channels=[16, 16, 16, 16],
                num_encoder_blocks=[1, 1, 1, 1], num_decoder_blocks=[1, 1, 1, 1])


def stamp(name, seed):
    h = hashlib.sha256()
    for path in [os.path.abspath(__file__), os.path.join(HERE, "tokenizer_files.py")]:
        with open(path, "rb") as f:
            h.update(f.read())
    folder = VARIANTS[name][0] if name in VARIANTS else CONTROLNETS[name][0]
    for fn in sorted(os.listdir(os.path.join(CONFIGS, folder))):
        with open(os.path.join(CONFIGS, folder, fn), "rb") as f:
            h.update(f.read())
    h.update(f"{name}:{seed}:{torch.__version__}".encode())
    return h.hexdigest()


@torch.no_grad()
def condition(pipe, sample_size, gen):
    """Rescales two layers so the stages the tests compare are neither flat nor saturated, using
    the pipeline's own one-step text-to-image path (so the statistics are the ones tests see)."""
    unet, vae = pipe.unet, pipe.vae
    # The U-Net's prediction: of order one, like a trained epsilon, on the input it gets.
    latent = torch.randn(1, unet.config.in_channels, sample_size, sample_size, generator=gen)
    ctx = pipe.text_encoder(pipe.tokenizer(["a photograph"], padding="max_length",
                                           max_length=77, return_tensors="pt").input_ids)[0]
    out = unet(latent, 999, ctx).sample
    unet.conv_out.weight.mul_(1.0 / max(out.std().item(), 1e-6))
    unet.conv_out.bias.zero_()
    # The tiny decoder: its output d becomes pixels clamp(d, 0, 1) * 255. Default init gives a
    # narrow spread around 0, half of it clamped to black; give each colour channel mean 0.5 and
    # spread 0.2 on the clean latents the pipeline actually decodes.
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    lat = pipe(["a photograph", "a red fox in the snow"], num_inference_steps=1,
               guidance_scale=0.0, generator=g, output_type="latent",
               height=sample_size * 8, width=sample_size * 8).images
    last = vae.decoder.layers[-1]
    last.bias.zero_()
    d = vae.decoder(lat)  # the layers' output before diffusers' "* 2 - 1"
    d = (d + 1) / 2
    mean, std = d.mean(dim=(0, 2, 3)), d.std(dim=(0, 2, 3)).clamp_min(1e-6)
    last.weight.mul_((0.2 / std).view(-1, 1, 1, 1))
    last.bias.copy_(0.5 - mean * 0.2 / std)


def build_controlnet(out_dir, name, seed=4321):
    """A ControlNet folder, and beside it NAME-bin with the same weights as a PyTorch .bin."""
    from diffusers import ControlNetModel

    folder, tiny = CONTROLNETS[name]
    dst = os.path.join(out_dir, name)
    st = stamp(name, seed)
    if os.path.exists(os.path.join(dst, ".stamp")) and os.path.exists(dst + "-bin"):
        with open(os.path.join(dst, ".stamp")) as f:
            if f.read() == st:
                return dst
    for d in [dst, dst + "-bin"]:
        if os.path.exists(d):
            shutil.rmtree(d)
    cfg = load(folder, "controlnet.json")
    if tiny:
        cfg = shrink_controlnet(cfg)
    torch.manual_seed(seed)
    cn = ControlNetModel.from_config(cfg).eval()
    # diffusers zero-initialises these; give them PyTorch's default initialisation instead.
    with torch.no_grad():
        zeroed = list(cn.controlnet_down_blocks) + [cn.controlnet_mid_block,
                                                    cn.controlnet_cond_embedding.conv_out]
        for conv in zeroed:
            conv.reset_parameters()
        # With default initialisation the embedding's output is almost only its biases, the
        # same for every control image, and small next to conv_in(latent). Without biases it
        # is the image's alone; scaled to conv_in's spread, the control image visibly steers
        # the picture.
        side = 16 if tiny else 64
        g = torch.Generator().manual_seed(seed)
        latent = torch.randn(1, cfg["in_channels"], side, side, generator=g)
        strokes = (torch.rand(1, 3, 8 * side, 8 * side, generator=g) > 0.9).float()
        emb = cn.controlnet_cond_embedding
        for conv in [emb.conv_in, *emb.blocks, emb.conv_out]:
            conv.bias.zero_()
        ratio = cn.conv_in(latent).std() / emb(strokes).std().clamp_min(1e-12)
        emb.conv_out.weight.mul_(ratio)
    cn.save_pretrained(dst + ".tmp")
    cn.save_pretrained(dst + "-bin.tmp", safe_serialization=False)
    with open(os.path.join(dst + ".tmp", ".stamp"), "w") as f:
        f.write(st)
    os.rename(dst + "-bin.tmp", dst + "-bin")
    os.rename(dst + ".tmp", dst)
    return dst


def build(out_dir, name, seed=1234):
    from diffusers import (AutoencoderTiny, StableDiffusionPipeline, UNet2DConditionModel)
    from diffusers.schedulers import DEISMultistepScheduler, EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if name.endswith("-bin"):
        return build_controlnet(out_dir, name[:-4]) + "-bin"
    if name in CONTROLNETS:
        return build_controlnet(out_dir, name)
    folder, tiny = VARIANTS[name]
    dst = os.path.join(out_dir, name)
    st = stamp(name, seed)
    if os.path.exists(os.path.join(dst, ".stamp")):
        with open(os.path.join(dst, ".stamp")) as f:
            if f.read() == st:
                return dst
    if os.path.exists(dst):
        shutil.rmtree(dst)

    unet_cfg = load(folder, "unet.json")
    text_cfg = load(folder, "text_encoder.json")
    vae_cfg = load(folder, "vae.json")
    tok_cfg = load(folder, "tokenizer.json")
    sched_cfg = load(folder, "scheduler.json")
    if tiny:
        unet_cfg, text_cfg, vae_cfg = shrink_unet(unet_cfg), shrink_text(text_cfg), shrink_vae(vae_cfg)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    unet = UNet2DConditionModel.from_config(unet_cfg).eval()
    vae = AutoencoderTiny.from_config(vae_cfg).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg)).eval()

    tok_dir = os.path.join(dst + ".tmp", "tokenizer-src")
    write_tokenizer(tok_dir, tok_cfg["pad_token"])
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    sched_cls = {"EulerDiscreteScheduler": EulerDiscreteScheduler,
                 "DEISMultistepScheduler": DEISMultistepScheduler}[sched_cfg["_class_name"]]
    scheduler = sched_cls.from_config(sched_cfg)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    condition(pipe, unet_cfg["sample_size"], gen)
    pipe.save_pretrained(dst + ".tmp")
    shutil.rmtree(tok_dir)
    # The tokenizer files as the public folders have them (vocab.json, merges.txt, ...).
    write_tokenizer(os.path.join(dst + ".tmp", "tokenizer"), tok_cfg["pad_token"])

    # fp16 copies of every weight file.
    from safetensors.torch import load_file, save_file
    for sub, base in [("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                      ("text_encoder", "model")]:
        src = os.path.join(dst + ".tmp", sub, base + ".safetensors")
        tensors = {k: v.half().contiguous() for k, v in load_file(src).items()}
        save_file(tensors, os.path.join(dst + ".tmp", sub, base + ".fp16.safetensors"),
                  metadata={"format": "pt"})
    with open(os.path.join(dst + ".tmp", ".stamp"), "w") as f:
        f.write(st)
    os.rename(dst + ".tmp", dst)
    return dst


if __name__ == "__main__":
    out = sys.argv[1]
    for n in sys.argv[2:]:
        print(build(out, n))
