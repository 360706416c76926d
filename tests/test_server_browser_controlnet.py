"""The demo page's ControlNet modes in a real browser (headless chromium over DevTools, see
tests/chromium.py) against `sdxs serve --controlnet` with the tiny random-weight sketch
ControlNet: strokes drawn on the sketch canvas with synthesised mouse events regenerate the
picture, which is the server's image of that drawing and changes when the drawing does; and
the webcam tab with its canny box ticked sends its frames through POST /v1/controlnet. A
screenshot is saved to tests/data/artifacts/demo-sketch.png.
"""
import base64
import os
import tempfile
import time
import urllib.parse

import numpy as np
import pytest

from chromium import CANVAS_STD, CHROMIUM, SKIP_REASON, demo_page
from conftest import DATA
from models import model_dir
from test_server import pixels, serving

CN = "tiny-sketch"
CN_OK = 'sdxs_requests_total{route="/v1/controlnet",status="200"}'
IMG2IMG_OK = 'sdxs_requests_total{route="/v1/img2img",status="200"}'

# The picture on show is the one of the drawing as it is now.
SKETCH_CURRENT = ("sdxsDemo.stats.sketch.frames > %d && "
                  "sdxsDemo.stats.sketch.drawnVersion === sdxsDemo.modes.sketch.version")


def stroke(dt, points):
    """Drags the mouse with the left button down through points given as fractions of the
    sketch canvas, as a person drawing would (Chromium turns these into pointer events)."""
    r = dt.js("""(() => { const c = document.getElementById('sketch-in');
      c.scrollIntoView(); const r = c.getBoundingClientRect();
      return [r.left, r.top, r.width, r.height]; })()""")
    xy = [(r[0] + fx * r[2], r[1] + fy * r[3]) for fx, fy in points]
    dt.call("Input.dispatchMouseEvent", type="mousePressed", x=xy[0][0], y=xy[0][1],
            button="left", buttons=1, clickCount=1)
    for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
        for k in range(1, 9):  # intermediate moves, as a real drag sends
            dt.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0 + (x1 - x0) * k / 8,
                    y=y0 + (y1 - y0) * k / 8, button="left", buttons=1)
    dt.call("Input.dispatchMouseEvent", type="mouseReleased", x=xy[-1][0], y=xy[-1][1],
            button="left", buttons=0, clickCount=1)


def shown_after(dt, frames):
    """Waits for a picture of the current drawing newer than frame number `frames`; returns
    the frame count and the picture."""
    dt.wait(SKETCH_CURRENT % frames, what="the picture of the current drawing")
    return dt.js("sdxsDemo.stats.sketch.frames"), dt.canvas("sketch-out")


def server_picture(srv, dt):
    """What POST /v1/controlnet answers for the sketch canvas as it is, with the page's
    parameters (the same request the page sends)."""
    p = dt.js("params()")
    png = dt.js("document.getElementById('sketch-in').toDataURL('image/png')")
    q = urllib.parse.urlencode({"prompt": p["prompt"], "seed": p["seed"], "width": p["width"],
                                "height": p["height"], "control_mode": "sketch",
                                "format": "jpeg"})
    status, _, data = srv.post("/v1/controlnet?" + q, base64.b64decode(png.split(",", 1)[1]),
                               {"Content-Type": "image/png"})
    assert status == 200, data[:300]
    return pixels(data)


def close_to(a, b):
    """The browser's JPEG decoder against Pillow's on the same bytes: equal up to the rounding
    of another decoder (Debian's chromium and Pillow decode them identically)."""
    return a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 2


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_sketch_and_canny_webcam_in_chromium():
    artifacts = os.path.join(DATA, "artifacts")
    os.makedirs(artifacts, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, \
            serving("--controlnet", model_dir(CN), "--batch-wait-ms", "0") as srv, \
            demo_page(srv, tmp) as dt:
        assert dt.js("sdxsDemo.model.controlnet") is True
        assert dt.js("document.getElementById('webcam-canny').disabled") is False

        # (a) The sketch tab: the blank paper gives a first picture.
        dt.js("sdxsDemo.select('sketch')")
        assert dt.js("document.getElementById('sketch-status').textContent") == ""
        frames, blank = shown_after(dt, 0)
        assert blank.shape == (128, 128, 3) and blank.std() > 5
        assert close_to(blank, server_picture(srv, dt))

        # Strokes drawn with the mouse: the pad shows them, and the picture follows.
        version = dt.js("sdxsDemo.modes.sketch.version")
        stroke(dt, [(0.15, 0.2), (0.85, 0.25), (0.5, 0.85), (0.15, 0.2)])
        assert dt.js("sdxsDemo.modes.sketch.version") > version  # the moves were drawn
        pad = dt.canvas("sketch-in")
        assert (pad.max(axis=2) < 100).mean() > 0.005, "no dark stroke on the sketch canvas"
        frames, first = shown_after(dt, frames)
        assert np.abs(first.astype(int) - blank).mean() > 5, "the drawing changed nothing"
        assert close_to(first, server_picture(srv, dt))
        dt.screenshot(os.path.join(artifacts, "demo-sketch.png"))

        # More strokes: another picture.
        stroke(dt, [(0.1, 0.9), (0.9, 0.1)])
        stroke(dt, [(0.3, 0.5), (0.7, 0.5), (0.7, 0.7)])
        frames, second = shown_after(dt, frames)
        assert np.abs(second.astype(int) - first).mean() > 5
        assert close_to(second, server_picture(srv, dt))

        # Clearing the paper brings the blank picture back, exactly (same seed, same input).
        dt.js("sdxsDemo.modes.sketch.clear()")
        frames, cleared = shown_after(dt, frames)
        assert np.array_equal(cleared, blank)
        stats = dt.js("sdxsDemo.stats.sketch")
        assert stats["errors"] == 0 and stats["latencyMs"] > 0, stats

        # (b) The webcam through canny edges and the ControlNet, one frame in flight.
        before = srv.metrics()
        dt.js("sdxsDemo.select('webcam')")
        dt.js("document.getElementById('webcam-canny').click()")
        assert dt.js("document.getElementById('webcam-canny').checked") is True
        dt.js("sdxsDemo.modes.webcam.start()")
        depths = []
        t0 = time.monotonic()
        while dt.js("sdxsDemo.stats.webcam.frames") < 4 and time.monotonic() - t0 < 120:
            depths.append(srv.metrics()["sdxs_queue_depth"])
            time.sleep(0.05)
        dt.js("sdxsDemo.modes.webcam.stop()")
        stats = dt.js("sdxsDemo.stats.webcam")
        assert stats["frames"] >= 4 and stats["errors"] == 0, stats
        assert max(depths) <= 1, depths
        assert dt.js(CANVAS_STD % "webcam-out") > 5
        time.sleep(0.5)  # a frame sent just before stop() is answered too
        after = srv.metrics()
        assert after[CN_OK] - before.get(CN_OK, 0) >= stats["frames"]
        assert after.get(IMG2IMG_OK, 0) == before.get(IMG2IMG_OK, 0)
