"""ControlNet: the engine against diffusers' StableDiffusionControlNetPipeline (one step, guidance
0, torch.Generator("cpu").manual_seed(seed) per image) on a random-weight ControlNet with the
sketch checkpoint's configuration beside the random DreamShaper-configuration U-Net; the PyTorch
.bin reader against the safetensors reader on the same weights; hostile .bin files.

Tolerances as in test_pipeline.py: each scaled residual and the U-Net's prediction within
relative L2 1e-4 in fp32; final 8-bit images with at least 99.9% of channel values within +-1.
The ControlNet's zero-initialised layers carry random weights (tests/ref/make_models.py), and
each comparison asserts that its residuals are far from zero and that the control image changes
the picture, so the comparison cannot pass with a ControlNet that does nothing.
"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

from conftest import exe, run
from models import cached, model_dir, rel_l2, slow
from test_pipeline import FLOAT_TOL, check_spread, to_uint8

PROMPTS = ["a photograph of an astronaut riding a horse", "a house by a lake, pencil drawing"]
SEEDS = [0, 2**32 + 7]
KINDS = ["sketch", "canny", "none"]
SCALES = [1.0, 0.6]

torch.set_num_threads(2)


# ---- control images ----

def control_image(path, kind, width, height):
    """A picture for one control mode, saved as PNG at a size other than the output's (so the
    Lanczos resize is part of the comparison): sketch, dark strokes on white; canny, a
    photograph-like scene with shading and shapes; none, another drawing, white on black, which
    is what the sketch ControlNet reads."""
    from PIL import Image, ImageDraw
    w, h = width * 3 // 2, height * 5 // 4
    if kind == "canny":
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([110 + 60 * np.sin(x / 23 + c) + 40 * np.cos(y / 31 - c)
                        for c in range(3)], axis=-1)
        pic = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(pic)
        d.ellipse([w // 5, h // 4, w // 2, 3 * h // 4], fill=(230, 200, 40))
        d.rectangle([3 * w // 5, h // 6, 9 * w // 10, h // 2], fill=(20, 60, 160))
        d.polygon([(w // 2, h - 4), (3 * w // 4, h // 2), (w - 6, h - 10)], fill=(180, 30, 30))
    else:
        ink, paper = ((0, 0, 0), (255, 255, 255)) if kind == "sketch" else \
            ((255, 255, 255), (0, 0, 0))
        pic = Image.new("RGB", (w, h), paper)
        d = ImageDraw.Draw(pic)
        if kind == "sketch":
            d.ellipse([w // 4, h // 5, 3 * w // 4, 4 * h // 5], outline=ink, width=3)
            d.line([(0, h - 8), (w, h // 3)], fill=ink, width=2)
            d.rectangle([w // 10, h // 10, w // 3, h // 3], outline=ink, width=2)
        else:
            d.polygon([(w // 2, h // 8), (w // 8, 7 * h // 8), (7 * w // 8, 7 * h // 8)],
                      outline=ink)
            d.line([(w // 6, h // 2), (5 * w // 6, h // 2)], fill=ink, width=3)
            d.arc([w // 3, h // 3, 2 * w // 3, 2 * h // 3], 0, 270, fill=ink, width=2)
    pic.save(path)
    return str(path)


def prepared(path, kind, width, height):
    """What the engine feeds the ControlNet, made with Pillow and OpenCV (the public sketch demo
    inverts the drawing; canny is cv2.Canny(rgb, 100, 200) on the resized image)."""
    import cv2
    from PIL import Image
    rgb = np.asarray(Image.open(path).convert("RGB").resize((width, height), Image.LANCZOS))
    if kind == "sketch":
        rgb = 255 - rgb
    elif kind == "canny":
        rgb = np.repeat(cv2.Canny(rgb, 100, 200)[..., None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(rgb))


# ---- reference and engine ----

def reference(folder, cn_folder, controls, prompts, seeds, width, height, scale):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    controlnet = ControlNetModel.from_pretrained(cn_folder)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(folder, controlnet=controlnet,
                                                             safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    got = {}
    pipe.unet.register_forward_hook(lambda m, a, o: got.__setitem__("eps", o[0].clone()))
    pipe.controlnet.register_forward_hook(
        lambda m, a, o: got.__setitem__("res", [t.clone() for t in o[0]] + [o[1].clone()]))
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    with torch.no_grad():
        out = pipe(prompts, image=controls, num_inference_steps=1, guidance_scale=0.0,
                   generator=gens, height=height, width=width, output_type="np",
                   controlnet_conditioning_scale=scale)
    result = {"eps": got["eps"].numpy(), "images": to_uint8(out.images)}
    for i, r in enumerate(got["res"]):
        result[f"residual{i}"] = r.numpy()
    return result


def engine(folder, cn_folder, tmp_path, paths, mode, prompts, seeds, width, height, scale):
    req = {"prompts": prompts, "seeds": seeds, "width": width, "height": height,
           "controlnet": cn_folder, "control_images": paths, "control_mode": mode,
           "control_scale": scale}
    (tmp_path / "req.json").write_text(json.dumps(req))
    run([exe("sdxs-probe"), "generate", folder, str(tmp_path / "req.json"), str(tmp_path)],
        timeout=1800)
    out = {k: np.load(tmp_path / f"{k}.npy") for k in ["eps", "images"]}
    i = 0
    while (tmp_path / f"residual{i}.npy").exists():
        out[f"residual{i}"] = np.load(tmp_path / f"residual{i}.npy")
        i += 1
    return out


def controlnet_parity(base, cn, kind, scale, size, tmp_path):
    folder, cn_folder = model_dir(base), model_dir(cn)
    path = control_image(tmp_path / f"{kind}.png", kind, size, size)
    ours = engine(folder, cn_folder, tmp_path, [path] * len(SEEDS), kind, PROMPTS, SEEDS, size,
                  size, scale)
    ref = cached(f"controlnet|{folder}|{cn_folder}|{kind}|{scale}|{size}|{PROMPTS}|{SEEDS}|"
                 f"{open(path, 'rb').read().hex()}",
                 lambda: reference(folder, cn_folder, [prepared(path, kind, size, size)] * 2,
                                   PROMPTS, SEEDS, size, size, scale))
    plain = cached(f"controlnet-off|{folder}|{PROMPTS}|{SEEDS}|{size}",
                   lambda: {"images": text_to_image(folder, size)})
    check_spread(ref["images"])

    # The residuals: as many as diffusers gives, none of them near zero, each within 1e-4.
    nres = sum(k.startswith("residual") for k in ref)
    assert sum(k.startswith("residual") for k in ours) == nres
    worst = 0.0
    for i in range(nres):
        r = ref[f"residual{i}"]
        assert ours[f"residual{i}"].shape == r.shape, i
        assert float(np.sqrt(np.mean(r.astype(np.float64) ** 2))) > 1e-2, \
            f"residual {i} is (nearly) zero: the zero convolutions were not re-randomised"
        e = rel_l2(ours[f"residual{i}"], r)
        worst = max(worst, e)
        assert e <= FLOAT_TOL, f"residual {i}: relative L2 {e:.3g}"

    # The prediction and the image.
    e_eps = rel_l2(ours["eps"], ref["eps"])
    diff = np.abs(ours["images"].astype(int) - ref["images"].astype(int))
    within = float(np.mean(diff <= 1))
    changed = float(np.mean(np.abs(ref["images"].astype(int) - plain["images"].astype(int))))
    print(f"{cn} {kind} scale {scale}: residuals {worst:.2e}, eps {e_eps:.2e}, within +-1 "
          f"{within:.5f}, max diff {diff.max()}, mean change by the ControlNet {changed:.1f}")
    assert e_eps <= FLOAT_TOL, f"U-Net relative L2 {e_eps:.3g}"
    assert within >= 0.999, f"only {within:.4%} of values within +-1"
    assert changed > 2.0, "the ControlNet hardly changes the picture"


def text_to_image(folder, size):
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator("cpu").manual_seed(s) for s in SEEDS]
    with torch.no_grad():
        out = pipe(PROMPTS, num_inference_steps=1, guidance_scale=0.0, generator=gens,
                   height=size, width=size, output_type="np")
    return to_uint8(out.images)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("kind", KINDS)
def test_tiny_controlnet(kind, scale, tmp_path):
    controlnet_parity("tiny-dreamshaper", "tiny-sketch", kind, scale, 128, tmp_path)


@pytest.mark.parametrize("scale", [slow(s) for s in SCALES])
@pytest.mark.parametrize("kind", KINDS)
def test_full_controlnet(kind, scale, tmp_path):
    controlnet_parity("dreamshaper", "sketch", kind, scale, 512, tmp_path)


def engine_parameters(base, cn):
    """The ControlNet's parameter count as `sdxs info --controlnet` prints it."""
    out = run([exe("sdxs"), "info", "--model", model_dir(base), "--controlnet",
               model_dir(cn)]).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("controlnet:")][0]
    return int(line.rsplit("parameters ", 1)[1].replace(",", ""))


def test_tiny_controlnet_info():
    from diffusers import ControlNetModel
    cn = ControlNetModel.from_pretrained(model_dir("tiny-sketch"))
    assert engine_parameters("tiny-dreamshaper", "tiny-sketch") == \
        sum(p.numel() for p in cn.parameters())


@pytest.mark.slow
def test_full_controlnet_info():
    assert engine_parameters("dreamshaper", "sketch") == 186_551_440


def test_full_controlnet_parameters():
    """The sketch configuration gives the published ControlNet's parameter count (diffusers'
    count, without building the full-size U-Net)."""
    from diffusers import ControlNetModel
    with open(os.path.join(os.path.dirname(__file__), "ref", "configs",
                           "sdxs-512-dreamshaper-sketch", "controlnet.json")) as f:
        cfg = json.load(f)
    cn = ControlNetModel.from_config(cfg)
    assert sum(p.numel() for p in cn.parameters()) == 186_551_440


def test_control_image_steers(tmp_path):
    """Different control images give different pictures (so the parity tests above cover the
    control path, not only the ControlNet's text and latent paths), and sketch mode is the
    inverted drawing: a drawing in sketch mode gives exactly the picture of its negative in
    mode none."""
    from PIL import Image, ImageOps
    cn = model_dir("tiny-sketch")
    images = {}
    for kind in KINDS:
        control = control_image(tmp_path / f"{kind}.png", kind, 128, 128)
        generate(tmp_path, kind, cn, control, mode=kind)
        images[kind] = np.asarray(Image.open(tmp_path / f"{kind}-0.png")).astype(int)
    for a, b in [("sketch", "canny"), ("sketch", "none"), ("canny", "none")]:
        change = float(np.mean(np.abs(images[a] - images[b])))
        print(f"{a} vs {b}: mean difference {change:.1f}")
        assert change > 2.0, f"{a} and {b} control images give nearly the same picture"

    # At the output size (no resize), sketch mode on a drawing = mode none on its negative.
    drawing = Image.open(tmp_path / "sketch.png").convert("RGB").resize((128, 128))
    drawing.save(tmp_path / "drawing.png")
    ImageOps.invert(drawing).save(tmp_path / "negative.png")
    generate(tmp_path, "drawing", cn, str(tmp_path / "drawing.png"), mode="sketch")
    generate(tmp_path, "negative", cn, str(tmp_path / "negative.png"), mode="none")
    for i in range(2):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"drawing-{i}.png")),
                              np.asarray(Image.open(tmp_path / f"negative-{i}.png")))


# ---- .bin and .safetensors ----

def generate(tmp_path, name, cn_folder, control, mode="sketch", extra=(), check=True):
    out = tmp_path / f"{name}.png"
    args = [exe("sdxs"), "generate", "--model", model_dir("tiny-dreamshaper"), "--prompt",
            "a cat on a sofa", "--seed", "5", "--batch", "2", "--output", str(out),
            "--control-image", control, "--control-mode", mode]
    if cn_folder:
        args += ["--controlnet", cn_folder]
    return run(args + list(extra), check=check)


def test_bin_equals_safetensors(tmp_path):
    from PIL import Image
    control = control_image(tmp_path / "c.png", "sketch", 128, 128)
    generate(tmp_path, "st", model_dir("tiny-sketch"), control)
    generate(tmp_path, "bin", model_dir("tiny-sketch-bin"), control)
    assert os.path.exists(os.path.join(model_dir("tiny-sketch-bin"),
                                       "diffusion_pytorch_model.bin"))
    for i in range(2):
        a = np.asarray(Image.open(tmp_path / f"st-{i}.png"))
        b = np.asarray(Image.open(tmp_path / f"bin-{i}.png"))
        assert a.tobytes() == b.tobytes(), f"image {i} differs between .bin and .safetensors"
    assert "Control mode: sketch" in Image.open(tmp_path / "st-0.png").text["parameters"]


def test_half_bin_equals_half_safetensors(tmp_path):
    """fp16 weights (HalfStorage) read from .bin and .safetensors give the same image."""
    from PIL import Image
    from safetensors.torch import load_file, save_file
    src = model_dir("tiny-sketch")
    sd = {k: v.half() for k, v in load_file(os.path.join(src, "diffusion_pytorch_model"
                                                              ".safetensors")).items()}
    for kind in ["st", "bin"]:
        d = tmp_path / kind
        d.mkdir()
        (d / "config.json").write_bytes(open(os.path.join(src, "config.json"), "rb").read())
        if kind == "st":
            save_file(sd, str(d / "diffusion_pytorch_model.safetensors"))
        else:
            torch.save(sd, str(d / "diffusion_pytorch_model.bin"))
    control = control_image(tmp_path / "c.png", "sketch", 128, 128)
    generate(tmp_path, "a", str(tmp_path / "st"), control)
    generate(tmp_path, "b", str(tmp_path / "bin"), control)
    for i in range(2):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"a-{i}.png")),
                              np.asarray(Image.open(tmp_path / f"b-{i}.png")))


def test_controlnet_bad_usage(tmp_path):
    control = control_image(tmp_path / "c.png", "sketch", 128, 128)
    cn = model_dir("tiny-sketch")
    r = generate(tmp_path, "x", None, control, check=False)
    assert r.returncode == 2 and "--controlnet" in r.stderr
    r = generate(tmp_path, "x", cn, control, mode="edges", check=False)
    assert r.returncode == 2 and "control-mode" in r.stderr
    r = generate(tmp_path, "x", cn, control, extra=["--control-scale", "11"], check=False)
    assert r.returncode == 2 and "control-scale" in r.stderr
    r = generate(tmp_path, "x", cn, str(tmp_path / "missing.png"), check=False)
    assert r.returncode == 3 and "missing.png" in r.stderr
    # A ControlNet that does not fit the U-Net (other widths) is a bad model folder.
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.load(open(os.path.join(cn, "config.json")))
    cfg["block_out_channels"] = [32, 64, 128]
    (other / "config.json").write_text(json.dumps(cfg))
    os.link(os.path.join(cn, "diffusion_pytorch_model.safetensors"),
            other / "diffusion_pytorch_model.safetensors")
    r = generate(tmp_path, "x", str(other), control, check=False)
    assert r.returncode == 3 and "block_out_channels" in r.stderr, r.stderr


# ---- hostile .bin files ----

class _Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _Tensor:
    """Pickles as torch.save pickles a tensor: _rebuild_tensor_v2(storage, offset, size,
    stride, requires_grad, hooks)."""
    def __init__(self, storage, size):
        self.storage, self.size = storage, size

    def __reduce__(self):
        stride = tuple(int(np.prod(self.size[i + 1:])) for i in range(len(self.size)))
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, tuple(self.size), stride, False, OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def state_dict_pickle(entries):
    """data.pkl for {name: _Tensor}, as torch.save writes it (protocol 2)."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(OrderedDict(entries))
    return buf.getvalue()


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_bin(path, pkl, storages, extra=()):
    """A zip laid out as torch.save lays it out (stored entries, each entry's data 64-byte
    aligned by padding in a local extra field)."""
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        entries = [("archive/data.pkl", pkl)]
        entries += [(f"archive/data/{key}", data) for key, data in storages.items()]
        entries += list(extra) + [("archive/version", b"3\n")]
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            pad = -(f.tell() + 30 + len(name) + 4) % 64
            info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
            z.writestr(info, data)


def hostile_files(tmp_path, marker):
    """(name, bytes of the .bin, a word the refusal must name)."""
    good = tmp_path / "good.bin"
    torch.save(OrderedDict(w=torch.arange(6, dtype=torch.float32).reshape(2, 3)), good)
    good_bytes = good.read_bytes()
    ok_storage = {"0": np.arange(6, dtype=np.float32).tobytes()}
    t = _Tensor(_Storage("0", 6), (2, 3))
    exploit = pickle.dumps(_Exploit(marker), protocol=2)
    cases = []

    def add(name, pkl, storages=ok_storage, extra=(), raw=None, word=""):
        p = tmp_path / f"{name}.bin"
        if raw is not None:
            p.write_bytes(raw)
        else:
            write_bin(p, pkl, storages, extra)
        cases.append((name, p, word))

    # A state dict whose value is os.system("touch marker"): pickle names posix.system.
    add("posix-system", pickle.dumps(OrderedDict(w=_Exploit(marker)), protocol=2),
        word="posix.system")
    # The same with the module spelled os, as a hand-written pickle would.
    cmd = f"touch {marker}".encode()
    add("os-system", b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd +
        b"\x85R.", word="os.system")
    # Any other global: builtins.eval, and pickle.loads on a nested exploit pickle.
    add("eval", b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.", word="builtins.eval")
    add("nested-loads", b"\x80\x02c_pickle\nloads\nB" + struct.pack("<I", len(exploit)) +
        exploit + b"\x85R.", word="_pickle.loads")
    # REDUCE of something that is not a known callable: an allowed storage type, a string.
    add("reduce-storage", b"\x80\x02ctorch\nFloatStorage\n)R.", word="REDUCE")
    add("reduce-string", b"\x80\x02X\x01\x00\x00\x00a)R.", word="REDUCE")
    # A second pickle in the archive, and a second pickle after the first one's STOP.
    add("extra-pickle", state_dict_pickle({"w": t}),
        extra=[("archive/more.pkl", exploit)], word="more than one pickle")
    add("after-stop", state_dict_pickle({"w": t}) + exploit, word="STOP")
    # A storage that declares more elements than its entry holds.
    add("big-storage", state_dict_pickle({"w": _Tensor(_Storage("0", 1 << 40), (2, 3))}),
        word="more than")
    # A tensor larger than its storage.
    add("big-tensor", state_dict_pickle({"w": _Tensor(_Storage("0", 6), (4, 3))}),
        word="runs past")
    # A truncated file, and a file cut inside its directory.
    add("truncated", None, raw=good_bytes[:len(good_bytes) // 2], word="truncated")
    add("truncated-end", None, raw=good_bytes[:-30], word="zip")
    add("not-zip", None, raw=b"\x80\x02}q\x00." * 10, word="legacy")
    return cases


def test_hostile_bin_refused(tmp_path):
    marker = tmp_path / "EXPLOITED"
    control = control_image(tmp_path / "c.png", "sketch", 128, 128)
    cfg = os.path.join(model_dir("tiny-sketch"), "config.json")

    # The exploit is real: Python's own unpickler runs it and the marker appears.
    probe_marker = tmp_path / "python-ran-it"
    subprocess.run([sys.executable, "-c", "import pickle,sys;pickle.loads(sys.stdin.buffer.read())"],
                   input=pickle.dumps(_Exploit(probe_marker), protocol=2), check=True)
    assert probe_marker.exists()

    for name, path, word in hostile_files(tmp_path, str(marker)):
        d = tmp_path / f"cn-{name}"
        d.mkdir()
        os.link(cfg, d / "config.json")
        os.replace(path, d / "diffusion_pytorch_model.bin")
        r = generate(tmp_path, "x", str(d), control, check=False)
        assert r.returncode == 3, (name, r.returncode, r.stderr)
        assert "diffusion_pytorch_model.bin" in r.stderr and word in r.stderr, (name, r.stderr)
        assert not marker.exists(), f"{name}: the exploit ran"
        print(f"{name}: {r.stderr.strip().splitlines()[-1]}")
