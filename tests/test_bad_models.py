"""Broken model folders: each must make `sdxs info` exit 3 with one line naming the file and
the problem, and never crash (the sanitizer build runs this too)."""
import json
import os
import struct

import pytest

from conftest import exe, run
from models import copy_model

UNET = "unet/diffusion_pytorch_model.safetensors"


def read_st(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(path, header, data, header_bytes=None):
    h = header_bytes if header_bytes is not None else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def first_tensor(header, suffix="conv_in.weight"):
    return next(k for k in header if k.endswith(suffix))


# Each case: (id, function that breaks the folder, file named in the message, words expected).
def truncate(d):
    p = os.path.join(d, UNET)
    size = os.path.getsize(p)
    os.truncate(p, size // 2)


def offsets_past_end(d):
    p = os.path.join(d, UNET)
    h, data = read_st(p)
    k = first_tensor(h)
    b, e = h[k]["data_offsets"]
    h[k]["data_offsets"] = [b + len(data), e + len(data)]
    write_st(p, h, data)


def overlap(d):
    p = os.path.join(d, UNET)
    h, data = read_st(p)
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
    a, b = names[0], names[1]
    size = h[b]["data_offsets"][1] - h[b]["data_offsets"][0]
    h[b]["data_offsets"] = [h[a]["data_offsets"][0], h[a]["data_offsets"][0] + size]
    write_st(p, h, data)


def wrong_dtype(d):
    p = os.path.join(d, UNET)
    h, data = read_st(p)
    h[first_tensor(h)]["dtype"] = "I32"
    write_st(p, h, data)


def missing_tensor(d):
    # Renaming keeps the file consistent: only the name the model needs is gone.
    p = os.path.join(d, UNET)
    h, data = read_st(p)
    k = first_tensor(h)
    h[k + "_renamed"] = h.pop(k)
    write_st(p, h, data)


def shape_mismatch(d):
    p = os.path.join(d, UNET)
    h, data = read_st(p)
    k = first_tensor(h)
    s = h[k]["shape"]
    h[k]["shape"] = [s[1], s[0]] + s[2:]
    write_st(p, h, data)


def header_not_json(d):
    p = os.path.join(d, UNET)
    h, data = read_st(p)
    write_st(p, h, data, header_bytes=b"{not json" + b" " * 100)


def header_too_long(d):
    p = os.path.join(d, UNET)
    with open(p, "r+b") as f:
        f.write(struct.pack("<Q", 1 << 62))


def config_wrong_type(d):
    p = os.path.join(d, "unet/config.json")
    cfg = json.load(open(p))
    cfg["layers_per_block"] = "two"
    json.dump(cfg, open(p, "w"))


def config_unsupported(d):
    p = os.path.join(d, "unet/config.json")
    cfg = json.load(open(p))
    cfg["class_embed_type"] = "timestep"
    json.dump(cfg, open(p, "w"))


def missing_merges(d):
    os.remove(os.path.join(d, "tokenizer/merges.txt"))


def vocab_not_json(d):
    with open(os.path.join(d, "tokenizer/vocab.json"), "w") as f:
        f.write('{"a": 1, "b": ')


def unsupported_vae(d):
    p = os.path.join(d, "model_index.json")
    idx = json.load(open(p))
    idx["vae"] = ["diffusers", "AutoencoderKL"]
    json.dump(idx, open(p, "w"))


def missing_text_config(d):
    os.remove(os.path.join(d, "text_encoder/config.json"))


def text_weights_gone(d):
    os.remove(os.path.join(d, "text_encoder/model.safetensors"))
    os.remove(os.path.join(d, "text_encoder/model.fp16.safetensors"))


CASES = [
    ("truncated", truncate, UNET, "outside"),
    ("offsets-past-end", offsets_past_end, UNET, "outside"),
    ("overlap", overlap, UNET, "overlaps"),
    ("wrong-dtype", wrong_dtype, UNET, "dtype I32"),
    ("missing-tensor", missing_tensor, UNET, "missing tensor 'conv_in.weight'"),
    ("shape-mismatch", shape_mismatch, UNET, "conv_in.weight"),
    ("header-not-json", header_not_json, UNET, "not valid JSON"),
    ("header-too-long", header_too_long, UNET, "header length"),
    ("config-wrong-type", config_wrong_type, "unet/config.json", "layers_per_block"),
    ("config-unsupported", config_unsupported, "unet/config.json", "class_embed_type"),
    ("missing-merges", missing_merges, "tokenizer/merges.txt", ""),
    ("vocab-not-json", vocab_not_json, "tokenizer/vocab.json", ""),
    ("unsupported-vae", unsupported_vae, "model_index.json", "AutoencoderKL"),
    ("missing-text-config", missing_text_config, "text_encoder/config.json", ""),
    ("no-text-weights", text_weights_gone, "text_encoder/model.safetensors", "missing"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_folder(case, tmp_path):
    _, breaker, file, words = case
    d = copy_model("tiny-dreamshaper", str(tmp_path / "m"))
    # Hard-linked weights must not be edited in place: give the folder its own copies.
    for rel in [UNET, "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors"]:
        p = os.path.join(d, rel)
        data = open(p, "rb").read()
        os.remove(p)
        open(p, "wb").write(data)
    breaker(d)
    r = run([exe("sdxs"), "info", "--model", d], check=False)
    lines = r.stderr.strip().splitlines()
    print(r.stderr)
    assert r.returncode == 3
    assert len(lines) == 1, lines
    assert file in lines[0]
    assert words in lines[0]


def test_shape_message_names_both_shapes(tmp_path):
    d = copy_model("tiny-dreamshaper", str(tmp_path / "m"))
    p = os.path.join(d, UNET)
    data = open(p, "rb").read()
    os.remove(p)
    open(p, "wb").write(data)
    shape_mismatch(d)
    r = run([exe("sdxs"), "info", "--model", d], check=False)
    assert r.returncode == 3
    assert "(4, 32, 3, 3)" in r.stderr and "(32, 4, 3, 3)" in r.stderr
