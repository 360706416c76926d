"""POST /v1/controlnet on `sdxs serve --controlnet DIR` (the real server on port 0, the tiny
random-weight model and ControlNet): the image the endpoint returns equals `sdxs generate`'s
for the same prompt, seed, control image, mode and scale, whichever way the image is sent (raw
body with query parameters, multipart form, JSON with base64); requests with different modes
sent together are not mixed in one engine run; bad fields and a server without a ControlNet
answer with JSON errors."""
import base64
import json
import threading
import urllib.parse

import numpy as np
from PIL import Image

from conftest import exe, run
from models import model_dir
from test_controlnet import control_image
from test_server import MODEL, error_of, multipart, pixels, serving

CN = "tiny-sketch"


def generate(tmp_path, name, control, mode, scale, seed, prompt):
    out = tmp_path / f"gen-{name}.png"
    run([exe("sdxs"), "generate", "--model", model_dir(MODEL), "--controlnet", model_dir(CN),
         "--control-image", str(control), "--control-mode", mode, "--control-scale",
         str(scale), "--prompt", prompt, "--seed", str(seed), "--output", str(out), "--quiet"])
    return np.asarray(Image.open(out).convert("RGB"))


def test_controlnet_endpoint_equals_generate(tmp_path):
    sketch = control_image(tmp_path / "sketch.png", "sketch", 128, 128)
    photo = control_image(tmp_path / "photo.png", "canny", 128, 128)
    ref_sketch = generate(tmp_path, "sketch", sketch, "sketch", 0.8, 11, "a castle")
    ref_canny = generate(tmp_path, "canny", photo, "canny", 1.0, 12, "a boat")
    assert ref_sketch.std() > 5 and ref_canny.std() > 5
    png = open(sketch, "rb").read()

    with serving("--controlnet", model_dir(CN), "--batch-wait-ms", "200") as srv:
        status, _, data = srv.get("/v1/models")
        assert status == 200 and json.loads(data)["data"][0]["controlnet"] is True

        # The raw image with query parameters, a form, and base64 in JSON.
        q = urllib.parse.urlencode({"prompt": "a castle", "seed": 11, "control_mode": "sketch",
                                    "control_scale": 0.8})
        status, h, raw = srv.post("/v1/controlnet?" + q, png, {"Content-Type": "image/png"})
        assert status == 200 and h["content-type"] == "image/png", raw[:300]
        assert np.array_equal(pixels(raw), ref_sketch)
        body, ctype = multipart({"prompt": "a castle", "seed": "11", "control_mode": "sketch",
                                 "control_scale": "0.8"},
                                {"image": ("sketch.png", "image/png", png)})
        status, _, form = srv.post("/v1/controlnet", body, {"Content-Type": ctype})
        assert status == 200 and np.array_equal(pixels(form), ref_sketch), form[:300]
        status, _, js = srv.post("/v1/controlnet", {
            "prompt": "a castle", "seed": 11, "control_scale": 0.8,
            "image": "data:image/png;base64," + base64.b64encode(png).decode()})
        assert status == 200 and np.array_equal(pixels(js), ref_sketch), js[:300]

        # Two modes at once: each request gets its own picture.
        got = {}

        def send(name, q, data):
            got[name] = srv.post("/v1/controlnet?" + urllib.parse.urlencode(q), data,
                                 {"Content-Type": "image/png"})

        threads = [threading.Thread(target=send, args=("sketch", {
                       "prompt": "a castle", "seed": 11, "control_scale": 0.8}, png)),
                   threading.Thread(target=send, args=("canny", {
                       "prompt": "a boat", "seed": 12, "control_mode": "canny"},
                       open(photo, "rb").read()))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got["sketch"][0] == 200 and got["canny"][0] == 200
        assert np.array_equal(pixels(got["sketch"][2]), ref_sketch)
        assert np.array_equal(pixels(got["canny"][2]), ref_canny)

        # Bad fields.
        status, _, data = srv.post("/v1/controlnet?control_mode=edges", png,
                                   {"Content-Type": "image/png"})
        error_of(status, data, 400, "control_mode")
        status, _, data = srv.post("/v1/controlnet?control_scale=11", png,
                                   {"Content-Type": "image/png"})
        error_of(status, data, 400, "control_scale")
        status, _, data = srv.post("/v1/controlnet?prompt=x", b"", {"Content-Type": "image/png"})
        assert status == 400, data[:300]


def test_controlnet_endpoint_without_controlnet(tmp_path):
    png = open(control_image(tmp_path / "s.png", "sketch", 128, 128), "rb").read()
    with serving() as srv:
        status, _, data = srv.get("/v1/models")
        assert json.loads(data)["data"][0]["controlnet"] is False
        status, _, data = srv.post("/v1/controlnet?prompt=x", png, {"Content-Type": "image/png"})
        err = error_of(status, data, 404)
        assert "--controlnet" in err["message"]
