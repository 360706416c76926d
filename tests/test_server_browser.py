"""The demo page in a real browser: Debian's chromium, headless, with a fake webcam playing a
Y4M file made here, driven over the DevTools protocol (tests/chromium.py). The type-as-you-go,
webcam and stream modes must each draw generated frames; the webcam mode must keep at most one
frame in flight. A screenshot is saved to tests/data/artifacts/demo-page.png.
"""
import os
import tempfile
import time

import pytest

from chromium import CANVAS_STD, CHROMIUM, SKIP_REASON, demo_page
from conftest import DATA
from test_server import serving


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_demo_page_in_chromium():
    artifacts = os.path.join(DATA, "artifacts")
    os.makedirs(artifacts, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, serving("--batch-wait-ms", "0") as srv, \
            demo_page(srv, tmp) as dt:
        assert dt.js("sdxsDemo.model.id") == "tiny-dreamshaper"

        # (a) Type a prompt letter by letter: pictures follow.
        dt.js("""(() => { const p = document.getElementById('prompt'); p.value = '';
          let i = 0; const text = 'a red fox';
          const t = setInterval(() => { p.value += text[i++];
            p.dispatchEvent(new Event('input')); if (i === text.length) clearInterval(t); },
          30); })()""")
        # Requests overlap the typing, so the picture of the whole prompt comes last.
        dt.wait("sdxsDemo.stats.type.frames >= 2 && "
                "sdxsDemo.stats.type.lastPrompt === 'a red fox'", what="the typed prompt")
        assert dt.js(CANVAS_STD % "type-out") > 5

        # (b) The webcam: frames go out one at a time and come back drawn.
        dt.js("sdxsDemo.select('webcam')")
        dt.js("sdxsDemo.modes.webcam.start()")
        depths = []
        t0 = time.monotonic()
        while dt.js("sdxsDemo.stats.webcam.frames") < 6 and time.monotonic() - t0 < 90:
            depths.append(srv.metrics()["sdxs_queue_depth"])
            time.sleep(0.05)
        stats = dt.js("sdxsDemo.stats.webcam")
        assert stats["frames"] >= 6 and stats["errors"] == 0, stats
        assert stats["fps"] > 0 and stats["latencyMs"] > 0, stats
        assert max(depths) <= 1, depths  # one frame in flight
        assert dt.js(CANVAS_STD % "webcam-out") > 5
        assert "frames/s" in dt.js("document.getElementById('stats').textContent")
        dt.screenshot(os.path.join(artifacts, "demo-page.png"))
        dt.js("sdxsDemo.modes.webcam.stop()")

        # (c) The stream viewer.
        dt.js("sdxsDemo.select('stream')")
        dt.js("sdxsDemo.modes.stream.start()")
        dt.wait("sdxsDemo.stats.stream.frames >= 3", what="stream frames")
        assert dt.js(CANVAS_STD % "stream-out") > 5
        dt.js("sdxsDemo.modes.stream.stop()")

        # (d) The sketch tab says why it is off.
        dt.js("sdxsDemo.select('sketch')")
        assert "ControlNet" in dt.js("document.getElementById('sketch-status').textContent")
