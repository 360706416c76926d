"""What the browser tests share: Debian's chromium started headless with a fake webcam playing a
Y4M file made here, and driven over the DevTools protocol through a minimal WebSocket client
(standard library only), plus helpers that read the demo page's canvases.
"""
import base64
import contextlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request

import numpy as np
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SKIP_REASON = "chromium is not installed (scripts/setup installs Debian's chromium)"


def write_y4m(path, width=320, height=240, frames=30):
    """A moving colour gradient as a 4:2:0 Y4M video (Chromium loops it as the webcam)."""
    yy, xx = np.mgrid[0:height, 0:width]
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W%d H%d F10:1 Ip A1:1 C420jpeg\n" % (width, height))
        for k in range(frames):
            y = ((xx + 8 * k) % 256 * 0.6 + yy % 256 * 0.4).astype(np.uint8)
            u = np.full((height // 2, width // 2), (90 + 4 * k) % 256, np.uint8)
            v = np.full((height // 2, width // 2), 160, np.uint8)
            f.write(b"FRAME\n" + y.tobytes() + u.tobytes() + v.tobytes())


class DevTools:
    """Just enough of RFC 6455 and the DevTools protocol: send a command, wait for its reply."""

    def __init__(self, ws_url):
        assert ws_url.startswith("ws://")
        hostport, path = ws_url[5:].split("/", 1)
        host, port = hostport.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id = 0

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            buf += chunk
        return buf

    def _recv_message(self):
        data = b""
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            data += self._recv_exact(n)
            if b0 & 0x80:
                return data

    def call(self, method, **params):
        self.next_id += 1
        msg = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        n = len(msg)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
        while True:
            reply = json.loads(self._recv_message())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, timeout=90, what=None):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or expr}; page says: " + str(self.js(
            "JSON.stringify([document.getElementById('error').textContent, "
            "document.getElementById('stats').textContent, window.sdxsDemo && sdxsDemo.stats])")))

    def canvas(self, element_id):
        """The canvas's pixels, (H, W, 3) uint8, read back as a PNG (lossless)."""
        url = self.js(f"document.getElementById('{element_id}').toDataURL('image/png')")
        data = base64.b64decode(url.split(",", 1)[1])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def screenshot(self, path):
        shot = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot))


# Spread of a canvas's pixels: a drawn picture, not an empty or flat canvas.
CANVAS_STD = """(() => {
  const c = document.getElementById('%s');
  if (!c.width) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = 0, s2 = 0, n = 0;
  for (let i = 0; i < d.length; i += 4) for (let k = 0; k < 3; k++) { s += d[i+k]; s2 += d[i+k]*d[i+k]; n++; }
  return Math.sqrt(s2 / n - (s / n) ** 2);
})()"""


@contextlib.contextmanager
def demo_page(srv, tmp):
    """Headless chromium with a fake webcam (a Y4M file written to tmp) on the server's demo
    page, loaded; yields the page's DevTools client."""
    video = os.path.join(tmp, "webcam.y4m")
    write_y4m(video)
    profile = os.path.join(tmp, "profile")
    browser = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
         "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={video}",
         "--window-size=1280,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        for _ in range(300):
            if os.path.exists(port_file) and open(port_file).read().count("\n") >= 1:
                break
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        dt = DevTools(page["webSocketDebuggerUrl"])
        dt.call("Page.enable")
        dt.call("Page.navigate", url=f"http://{srv.host}:{srv.port}/")
        dt.wait("window.sdxsDemo && sdxsDemo.ready === true", what="the page to load")
        yield dt
    finally:
        browser.terminate()
        try:
            browser.wait(20)
        except subprocess.TimeoutExpired:
            browser.kill()
