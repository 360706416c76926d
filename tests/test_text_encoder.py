"""The CLIP text encoder against transformers' CLIPTextModel, on the same random weights.

Tolerances: fp32 weights, relative L2 of last_hidden_state at most 1e-5 (both sides compute in
float32 with different summation orders; measured far below that). fp16 weights (the engine
reads *.fp16.safetensors when it is the only file): compared with transformers running the same
fp16 weights converted to float32, again 1e-5, since conversion to float32 is exact; compared
with the original fp32 weights, at most 2e-2, which is what rounding every weight to 11
significant bits does to a 12- or 23-layer transformer (measured around 1e-3 here).
"""
import numpy as np
import pytest
import torch

from conftest import exe, run
from models import copy_model, model_dir, rel_l2, slow

PROMPTS = ["a photograph of an astronaut riding a horse",
           "A RED fox, sitting in the snow; 4k, highly detailed!!",
           ""]


def reference(folder, prompts, dtype=None):
    from transformers import CLIPTextModel, CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    kw = {"variant": "fp16"} if dtype == "fp16" else {}
    model = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw).float().eval()
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True,
              return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).last_hidden_state.numpy()


def engine(folder, prompts, tmp_path):
    out = tmp_path / "text.npy"
    run([exe("sdxs-probe"), "text", folder, str(out)] + prompts)
    return np.load(out)


@pytest.mark.parametrize("name", ["tiny-dreamshaper", "tiny-09", slow("dreamshaper"),
                                  slow("sdxs09")])
def test_text_encoder_matches_transformers(name, tmp_path):
    folder = model_dir(name)
    ref = reference(folder, PROMPTS)
    got = engine(folder, PROMPTS, tmp_path)
    assert got.shape == ref.shape
    # The prompts differ, so the rows must too (a constant output would fail here).
    assert rel_l2(got[0], got[1]) > 1e-2
    err = rel_l2(got, ref)
    print(f"{name}: relative L2 {err:.2e}")
    assert err <= 1e-5


@pytest.mark.parametrize("name", ["tiny-dreamshaper", slow("dreamshaper")])
def test_fp16_weights(name, tmp_path):
    folder = copy_model(name, str(tmp_path / "m"), drop=["text_encoder/model.safetensors"])
    got = engine(folder, PROMPTS, tmp_path)
    same_weights = reference(model_dir(name), PROMPTS, dtype="fp16")
    full = reference(model_dir(name), PROMPTS)
    e_same, e_full = rel_l2(got, same_weights), rel_l2(got, full)
    print(f"{name} fp16: vs the same fp16 weights {e_same:.2e}, vs fp32 weights {e_full:.2e}")
    assert e_same <= 1e-5
    assert e_full <= 2e-2
