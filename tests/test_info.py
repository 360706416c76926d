"""`sdxs info` and `sdxs tokenize` on the full-size configurations: the parameter counts of the
public checkpoints, and exit codes."""
import re

import pytest

from conftest import exe, run
from models import model_dir, slow

# What models built from the real configurations have (the public checkpoints' counts).
EXPECTED = {
    "dreamshaper": {"text_encoder": 123060480, "unet": 315746244},
    "sdxs09": {"unet": 328177284},
}
VAE = (1222532, 1222531)


def counts(text):
    found = {}
    for line in text.splitlines():
        m = re.match(r"(\w+): .*parameters ([\d,]+)", line)
        if m:
            found[m.group(1)] = int(m.group(2).replace(",", ""))
    m = re.search(r"encoder parameters ([\d,]+), decoder parameters ([\d,]+)", text)
    vae = (int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))) if m else None
    return found, vae


@pytest.mark.parametrize("name", [slow("dreamshaper"), slow("sdxs09")])
def test_info_parameter_counts(name):
    out = run([exe("sdxs"), "info", "--model", model_dir(name)]).stdout
    print(out)
    found, vae = counts(out)
    for part, n in EXPECTED[name].items():
        assert found.get(part) == n, f"{part}: {found.get(part)} != {n}"
    assert vae == VAE
    assert "UNet2DConditionModel" in out and "AutoencoderTiny" in out


@pytest.mark.slow
def test_info_counts_match_diffusers():
    """Every component's count equals the module's own parameter count in diffusers."""
    import torch
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextModel
    folder = model_dir("sdxs09")
    found, vae = counts(run([exe("sdxs"), "info", "--model", folder]).stdout)
    with torch.no_grad():
        te = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
        ae = AutoencoderTiny.from_pretrained(folder, subfolder="vae")
        un = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    assert found["text_encoder"] == sum(p.numel() for p in te.parameters())
    assert found["unet"] == sum(p.numel() for p in un.parameters())
    assert vae == (sum(p.numel() for p in ae.encoder.parameters()),
                   sum(p.numel() for p in ae.decoder.parameters()))


def test_tokenize_command():
    from transformers import CLIPTokenizer
    folder = model_dir("tiny-09")
    prompt = "Hello, World! a photo of 2 cats"
    out = run([exe("sdxs"), "tokenize", "--model", folder, "--prompt", prompt]).stdout
    ids = [int(x) for x in out.split()]
    ref = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")(
        prompt, padding="max_length", max_length=77, truncation=True).input_ids
    assert ids == ref
    assert ids[-1] == ref[-1] == 0  # this folder pads with '!', id 0


def test_usage_errors():
    assert run([exe("sdxs")], check=False).returncode == 2
    assert run([exe("sdxs"), "frobnicate"], check=False).returncode == 2
    assert run([exe("sdxs"), "tokenize", "--model", model_dir("tiny-09")],
               check=False).returncode == 2
    r = run([exe("sdxs"), "info", "--model", "/nonexistent/folder"], check=False)
    assert r.returncode == 3 and "model_index.json" in r.stderr
