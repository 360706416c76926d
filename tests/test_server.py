"""`sdxs serve` as a black box: the real binary on port 0 with the tiny random-weight model,
spoken to over loopback HTTP(S). Every endpoint and every error status; pictures equal to
`sdxs generate` for the same prompt, seed and size; concurrent requests batched, each answered
with its own picture; frame streams; clients that go away; HTTPS; exit 0 after SIGTERM.

Images are compared pixel for pixel (PNG) or byte for byte (JPEG from the same encoder): the
engine is batch-invariant, so a request's picture does not depend on what it was batched with.
"""
import base64
import contextlib
import http.client
import io
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from conftest import exe, run
from models import model_dir

MODEL = "tiny-dreamshaper"
READY = re.compile(r"ready: .* on (https?)://([^:\s]+):(\d+)")


class Server:
    """A running `sdxs serve`; its log (stderr) is collected by a thread."""

    def __init__(self, *flags, model=MODEL):
        self.log_lines = []
        self.proc = subprocess.Popen(
            [exe("sdxs"), "serve", "--model", model_dir(model), "--port", "0", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log_lines.append(line.rstrip("\n"))
                m = READY.search(line)
                if m:
                    self.scheme, self.host, self.port = m.group(1), m.group(2), int(m.group(3))
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not ready.wait(120) or self.proc.poll() is not None:
            self.proc.kill()
            raise AssertionError("server did not become ready:\n" + self.log())

    def log(self):
        return "\n".join(self.log_lines[-60:])

    def conn(self, timeout=120):
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None):
        """Returns (status, headers as a lower-case dict, body bytes)."""
        c = conn or self.conn()
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = dict({"Content-Type": "application/json"}, **(headers or {}))
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if conn is None:
            c.close()
        return r.status, hdrs, data

    def post(self, path, body=None, headers=None):
        return self.request("POST", path, body, headers)

    def get(self, path, headers=None):
        return self.request("GET", path, None, headers)

    def metrics(self):
        status, _, data = self.get("/metrics")
        assert status == 200
        return parse_metrics(data.decode())

    def stop(self, sig=signal.SIGTERM, timeout=120):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("server did not stop:\n" + self.log())
        self.reader.join(10)
        return rc


@contextlib.contextmanager
def serving(*flags, model=MODEL):
    s = Server(*flags, model=model)
    try:
        yield s
    finally:
        rc = s.stop()
        assert rc == 0, f"server exited {rc}:\n{s.log()}"


@pytest.fixture(scope="module")
def srv():
    # A batch window long enough that concurrent requests meet in one engine run.
    with serving("--max-batch", "8", "--batch-wait-ms", "30", "--max-queue", "256") as s:
        yield s


def parse_metrics(text):
    """Prometheus text format: every line a comment or `name{labels} value`."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert line.startswith("# HELP ") or line.startswith("# TYPE ") or not line, line
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)', line)
        assert m, f"not Prometheus text: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def pixels(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def error_of(status, data, want_status, want_param="*"):
    assert status == want_status, (status, data[:300])
    err = json.loads(data)["error"]
    assert set(err) == {"message", "type", "param"} and err["message"], err
    if want_param != "*":
        assert err["param"] == want_param, err
    return err


def generate(tmp_path, prompt, seed, width=None, height=None, batch=1, init=None,
             strength=None):
    """`sdxs generate`'s pictures for the same parameters."""
    out = tmp_path / f"gen-{seed}-{batch}.png"
    args = [exe("sdxs"), "generate", "--model", model_dir(MODEL), "--prompt", prompt,
            "--seed", str(seed), "--output", str(out), "--batch", str(batch), "--quiet"]
    if width:
        args += ["--width", str(width), "--height", str(height)]
    if init is not None:
        args += ["--init-image", str(init), "--strength", str(strength)]
    run(args)
    if batch == 1:
        return [np.asarray(Image.open(out).convert("RGB"))]
    return [np.asarray(Image.open(tmp_path / f"gen-{seed}-{batch}-{i}.png").convert("RGB"))
            for i in range(batch)]


def spread(img):
    assert img.std() > 5, "flat picture"


# ---- the simple endpoints ----

def test_healthz_models_static(srv):
    status, h, data = srv.get("/healthz")
    assert status == 200 and json.loads(data)["status"] == "ok"
    status, h, data = srv.get("/v1/models")
    model = json.loads(data)["data"][0]
    assert status == 200 and model["id"] == MODEL and model["default_size"] == "128x128"
    assert model["max_batch"] == 8 and model["controlnet"] is False
    status, h, data = srv.get("/")
    assert status == 200 and h["content-type"].startswith("text/html") and b"app.js" in data
    for name in ["app.js", "style.css"]:
        status, h, data = srv.get("/static/" + name)
        assert status == 200 and len(data) > 100, name
    for bad in ["/static/../CMakeLists.txt", "/static/nope.js", "/static/"]:
        status, _, data = srv.get(bad)
        error_of(status, data, 404)
    status, h, data = srv.request("HEAD", "/healthz")
    assert status == 200 and data == b""


def test_txt2img_equals_generate(srv, tmp_path):
    body = {"prompt": "a red fox in the snow", "seed": 1234, "width": 160, "height": 128}
    status, h, data = srv.post("/v1/txt2img", body)
    assert status == 200, data[:300]
    assert h["content-type"] == "image/png" and h["x-seed"] == "1234"
    assert "engine;dur=" in h["server-timing"] and h["x-request-id"].isdigit()
    got = pixels(data)
    ref = generate(tmp_path, body["prompt"], 1234, 160, 128)[0]
    spread(ref)
    assert got.shape == (128, 160, 3) and np.array_equal(got, ref)

    # curl -d sends application/x-www-form-urlencoded: read as JSON all the same.
    status, h, data2 = srv.post("/v1/txt2img", json.dumps(body).encode(),
                                {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and np.array_equal(pixels(data2), ref)

    # JPEG; and a missing seed picks one and says which.
    status, h, data = srv.post("/v1/txt2img", {"prompt": "x", "format": "jpeg"})
    assert status == 200 and h["content-type"] == "image/jpeg" and data[:2] == b"\xff\xd8"
    assert 0 <= int(h["x-seed"]) < 2**32


def test_openai_generations(srv, tmp_path):
    body = {"prompt": "a lighthouse", "n": 3, "size": "128x128", "seed": 77,
            "response_format": "b64_json"}
    status, h, data = srv.post("/v1/images/generations", body)
    assert status == 200, data[:300]
    doc = json.loads(data)
    assert abs(doc["created"] - time.time()) < 60 and len(doc["data"]) == 3
    refs = generate(tmp_path, "a lighthouse", 77, 128, 128, batch=3)
    for i, item in enumerate(doc["data"]):
        assert item["seed"] == 77 + i
        assert np.array_equal(pixels(base64.b64decode(item["b64_json"])), refs[i])
    status, h, data = srv.post("/v1/images/generations",
                               {"prompt": "a lighthouse", "output_format": "jpeg", "seed": 1})
    item = json.loads(data)["data"][0]
    assert status == 200 and base64.b64decode(item["b64_json"])[:2] == b"\xff\xd8"


def init_png(tmp_path):
    rng = np.random.default_rng(3)
    img = np.kron(rng.integers(0, 256, (12, 12, 3)), np.ones((16, 16, 1))).astype(np.uint8)
    path = tmp_path / "init.png"
    Image.fromarray(img).save(path)
    return path, path.read_bytes()


def multipart(fields, files):
    boundary = "sdxsTESTboundary"
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                     .encode())
    for k, (name, ctype, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; '
                     f'filename="{name}"\r\nContent-Type: {ctype}\r\n\r\n'.encode() + data +
                     b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def test_img2img_three_ways_equal_generate(srv, tmp_path):
    path, png = init_png(tmp_path)
    ref = generate(tmp_path, "a castle", 9, 128, 128, init=path, strength=0.6)[0]
    spread(ref)
    q = urllib.parse.urlencode({"prompt": "a castle", "seed": 9, "strength": 0.6})
    status, h, raw = srv.post("/v1/img2img?" + q, png, {"Content-Type": "image/png"})
    assert status == 200 and h["content-type"] == "image/png", raw[:300]
    assert np.array_equal(pixels(raw), ref)

    body, ctype = multipart({"prompt": "a castle", "seed": "9", "strength": "0.6"},
                            {"image": ("init.png", "image/png", png)})
    status, h, form = srv.post("/v1/img2img", body, {"Content-Type": ctype})
    assert status == 200 and np.array_equal(pixels(form), ref), form[:300]

    status, h, js = srv.post("/v1/img2img", {"prompt": "a castle", "seed": 9, "strength": 0.6,
                                            "image": base64.b64encode(png).decode()})
    assert status == 200 and np.array_equal(pixels(js), ref), js[:300]

    # A data URL, as a browser's canvas makes it, and a JPEG answer.
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    status, h, js = srv.post("/v1/img2img", {"prompt": "a castle", "seed": 9, "strength": 0.6,
                                            "image": url, "format": "jpeg"})
    assert status == 200 and h["content-type"] == "image/jpeg"


def test_a1111_api(srv, tmp_path):
    status, h, data = srv.post("/sdapi/v1/txt2img", {
        "prompt": "a boat", "negative_prompt": "blurry", "seed": -1, "width": 128,
        "height": 128, "batch_size": 2, "steps": 20, "cfg_scale": 7})
    assert status == 200, data[:300]
    doc = json.loads(data)
    assert set(doc) == {"images", "parameters", "info"} and len(doc["images"]) == 2
    info = json.loads(doc["info"])
    assert set(info["ignored"]) == {"negative_prompt", "steps", "cfg_scale"}
    seed = info["all_seeds"][0]
    assert info["all_seeds"] == [seed, seed + 1] and doc["parameters"]["seed"] == seed
    refs = generate(tmp_path, "a boat", seed, 128, 128, batch=2)
    for img, ref in zip(doc["images"], refs):
        assert np.array_equal(pixels(base64.b64decode(img)), ref)

    path, png = init_png(tmp_path)
    status, h, data = srv.post("/sdapi/v1/img2img", {
        "prompt": "a castle", "seed": 9, "denoising_strength": 0.6,
        "init_images": [base64.b64encode(png).decode()]})
    assert status == 200, data[:300]
    doc = json.loads(data)
    ref = generate(tmp_path, "a castle", 9, 128, 128, init=path, strength=0.6)[0]
    assert np.array_equal(pixels(base64.b64decode(doc["images"][0])), ref)
    assert "init_images" not in doc["parameters"]
    assert json.loads(doc["info"])["denoising_strength"] == pytest.approx(0.6)


# ---- errors ----

def test_client_errors(srv):
    cases = [
        ("/v1/txt2img", b"{not json", "body"),
        ("/v1/txt2img", b"[1, 2]", "body"),
        ("/v1/txt2img", b"[" * 9 + b"]" * 9, "body"),
        ("/v1/txt2img", {"prompt": "x" * 4097}, "prompt"),
        ("/v1/txt2img", {"prompt": 5}, "prompt"),
        ("/v1/txt2img", {"width": 100}, "width"),
        ("/v1/txt2img", {"height": 2048}, "height"),
        ("/v1/txt2img", {"seed": -3}, "seed"),
        ("/v1/txt2img", {"seed": 2**53}, "seed"),
        ("/v1/txt2img", {"format": "gif"}, "format"),
        ("/v1/images/generations", {"n": 1}, "prompt"),
        ("/v1/images/generations", {"prompt": "x", "n": 0}, "n"),
        ("/v1/images/generations", {"prompt": "x", "n": 9}, "n"),
        ("/v1/images/generations", {"prompt": "x", "size": "100x100"}, "size"),
        ("/v1/images/generations", {"prompt": "x", "size": "big"}, "size"),
        ("/v1/images/generations", {"prompt": "x", "response_format": "url"}, "response_format"),
        ("/v1/img2img", {"prompt": "x"}, "image"),
        ("/v1/img2img", {"prompt": "x", "image": "@@@"}, "image"),
        ("/v1/img2img", {"prompt": "x", "image": base64.b64encode(b"not a png").decode()},
         "image"),
        ("/v1/img2img", {"prompt": "x", "image": "", "strength": 2}, "strength"),
        ("/sdapi/v1/img2img", {"prompt": "x"}, "init_images"),
        ("/sdapi/v1/txt2img", {"batch_size": 100}, "batch_size"),
    ]
    for path, body, param in cases:
        if isinstance(body, bytes):
            status, _, data = srv.post(path, body, {"Content-Type": "application/json"})
        else:
            status, _, data = srv.post(path, body)
        err = error_of(status, data, 400, param)
        assert err["type"] == "invalid_request_error", (path, body, err)
    # A raw image body with a bad query value.
    status, _, data = srv.post("/v1/img2img?strength=abc", b"\x89PNG", {"Content-Type":
                                                                        "image/png"})
    error_of(status, data, 400, "strength")


def test_routing_errors(srv):
    status, h, data = srv.get("/v1/nothing")
    assert error_of(status, data, 404)["type"] == "not_found_error"
    status, h, data = srv.get("/v1/txt2img")
    error_of(status, data, 405)
    assert "POST" in h["allow"]
    status, h, data = srv.request("DELETE", "/healthz")
    error_of(status, data, 405)
    assert "GET" in h["allow"]
    status, h, data = srv.post("/v1/txt2img", b"hello", {"Content-Type": "text/plain"})
    error_of(status, data, 415, "Content-Type")
    status, h, data = srv.post("/v1/txt2img", b"\x89PNG", {"Content-Type": "image/png"})
    error_of(status, data, 415, "Content-Type")


def test_body_limits():
    with serving("--max-body-bytes", "20000") as s:
        # JSON routes: 64 KiB, announced by Content-Length or found while reading (chunked).
        big = json.dumps({"prompt": "x", "pad": "y" * 70000}).encode()
        status, _, data = s.post("/v1/txt2img", big, {"Content-Type": "application/json"})
        error_of(status, data, 413, "body")
        c = s.conn()
        c.putrequest("POST", "/v1/txt2img")
        c.putheader("Content-Type", "application/json")
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        for i in range(0, len(big), 8192):
            chunk = big[i:i + 8192]
            c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        error_of(r.status, r.read(), 413, "body")
        c.close()
        # Image routes: --max-body-bytes.
        status, _, data = s.post("/v1/img2img?prompt=x", b"\0" * 30000,
                                 {"Content-Type": "image/png"})
        error_of(status, data, 413, "body")
        # The server is still fine.
        assert s.get("/healthz")[0] == 200


def test_api_key_and_cors():
    with serving("--api-key", "s3cret", "--cors-origin", "http://a.example") as s:
        status, h, data = s.post("/v1/txt2img", {"prompt": "x"})
        error_of(status, data, 401, "Authorization")
        assert h["www-authenticate"] == "Bearer"
        status, _, data = s.post("/v1/txt2img", {"prompt": "x"},
                                 {"Authorization": "Bearer wrong"})
        error_of(status, data, 401)
        status, _, data = s.get("/metrics")
        error_of(status, data, 401)
        status, h, data = s.post("/v1/txt2img", {"prompt": "x"},
                                 {"Authorization": "Bearer s3cret", "Origin": "http://a.example"})
        assert status == 200 and h["access-control-allow-origin"] == "http://a.example"
        assert "X-Seed" in h["access-control-expose-headers"]
        status, h, _ = s.get("/v1/models?api_key=s3cret", {"Origin": "http://b.example"})
        assert status == 200 and "access-control-allow-origin" not in h
        # Open without a key: health and the page.
        assert s.get("/healthz")[0] == 200 and s.get("/")[0] == 200
        # Preflight.
        status, h, _ = s.request("OPTIONS", "/v1/txt2img", None,
                                 {"Origin": "http://a.example",
                                  "Access-Control-Request-Method": "POST"})
        assert status == 204 and "POST" in h["access-control-allow-methods"]
        assert "Authorization" in h["access-control-allow-headers"]
        status, h, _ = s.request("OPTIONS", "/v1/txt2img", None, {"Origin": "http://b.example"})
        assert status == 204 and "access-control-allow-origin" not in h


def concurrently(n_clients, jobs, fn):
    """Runs fn(job) for every job from n_clients threads; returns the results in job order."""
    results = [None] * len(jobs)
    lock = threading.Lock()
    todo = list(range(len(jobs)))

    def client():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            try:
                results[i] = fn(jobs[i])
            except Exception as e:  # reported by the caller
                results[i] = e

    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return results


def test_queue_full_429():
    with serving("--max-queue", "1", "--max-batch", "1", "--batch-wait-ms", "0") as s:
        body = {"prompt": "x", "width": 512, "height": 512}
        results = concurrently(6, [body] * 6, lambda b: s.post("/v1/txt2img", b))
        statuses = sorted(r[0] for r in results)
        assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses, statuses
        for status, h, data in results:
            if status == 429:
                error_of(status, data, 429)
                assert 1 <= int(h["retry-after"]) <= 60


def test_request_timeout_503():
    with serving("--request-timeout-ms", "1", "--max-batch", "1", "--batch-wait-ms", "0") as s:
        body = {"prompt": "x", "width": 256, "height": 256}
        results = concurrently(4, [body] * 4, lambda b: s.post("/v1/txt2img", b))
        statuses = sorted(r[0] for r in results)
        assert set(statuses) <= {200, 503} and 503 in statuses, statuses
        for status, h, data in results:
            if status == 503:
                assert "waited" in error_of(status, data, 503)["message"]
        assert s.metrics()['sdxs_requests_total{route="/v1/txt2img",status="503"}'] >= 1


# ---- batching ----

def test_concurrent_requests_batched_each_its_own(srv):
    """200 requests from 20 clients over 20 (prompt, seed) pairs: every answer is the picture
    of its own pair (as a request alone gets it), or a 429; none lost, swapped or 5xx."""
    pairs = [(f"prompt number {k % 5}", 1000 + k) for k in range(20)]
    refs = {}
    for prompt, seed in pairs:  # one at a time: each ran as a batch of one
        status, h, data = srv.post("/v1/txt2img", {"prompt": prompt, "seed": seed})
        assert status == 200 and 'batch;desc="1 images"' in h["server-timing"]
        refs[(prompt, seed)] = pixels(data)
    assert len({r.tobytes() for r in refs.values()}) == 20, "pairs should differ"
    before = srv.metrics()

    jobs = [pairs[i % 20] for i in range(200)]
    results = concurrently(20, jobs, lambda p: srv.post(
        "/v1/txt2img", {"prompt": p[0], "seed": p[1]}))
    ok = batched = 0
    for (prompt, seed), res in zip(jobs, results):
        assert not isinstance(res, Exception), res
        status, h, data = res
        assert status in (200, 429), (status, data[:200])
        if status == 200:
            ok += 1
            assert h["x-seed"] == str(seed)
            assert np.array_equal(pixels(data), refs[(prompt, seed)]), (prompt, seed)
            n = int(re.search(r'batch;desc="(\d+) images"', h["server-timing"]).group(1))
            batched += n > 1
    assert ok >= 150 and batched > 0, (ok, batched)

    after = srv.metrics()
    runs = after["sdxs_batch_size_count"] - before["sdxs_batch_size_count"]
    images = after["sdxs_batch_size_sum"] - before["sdxs_batch_size_sum"]
    assert images == ok and runs < images, (runs, images)
    assert after["sdxs_batch_size_bucket{le=\"1\"}"] < after["sdxs_batch_size_count"]


def test_metrics_page(srv):
    srv.post("/v1/txt2img", {"prompt": "metrics"})
    m = srv.metrics()
    assert m['sdxs_requests_total{route="/v1/txt2img",status="200"}'] >= 1
    for stage in ["queue", "text_encoder", "unet", "decoder", "engine", "encode"]:
        assert m[f'sdxs_stage_seconds_count{{stage="{stage}"}}'] >= 1, stage
        assert f'sdxs_stage_seconds_bucket{{stage="{stage}",le="+Inf"}}' in m
    assert m['sdxs_request_seconds_count{route="/v1/txt2img"}'] >= 1
    for name in ["sdxs_queue_depth", "sdxs_images_per_second", "sdxs_images_total",
                 "sdxs_batches_total", "sdxs_model_loaded", "sdxs_stream_viewers"]:
        assert name in m, name
    assert m["sdxs_model_loaded"] == 1 and m["sdxs_images_per_second"] > 0


# ---- streams ----

def read_parts(resp, count):
    """Reads count parts of a multipart/x-mixed-replace body: (headers, JPEG bytes)."""
    parts = []
    while len(parts) < count:
        line = resp.readline()
        if not line:
            break
        if line.strip() != b"--sdxsframe":
            continue
        headers = {}
        while True:
            line = resp.readline().strip()
            if not line:
                break
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        data = resp.read(int(headers["content-length"]))
        parts.append((headers, data))
    return parts


def open_stream(srv, query):
    c = srv.conn()
    c.request("GET", "/v1/stream?" + urllib.parse.urlencode(query))
    r = c.getresponse()
    return c, r


def test_stream_frames_shared_and_exact(srv):
    query = {"prompt": "a walk", "seed": 40, "frames_per_seed": 2, "width": 128,
             "height": 128, "quality": 80}
    c1, r1 = open_stream(srv, query)
    assert r1.status == 200
    assert r1.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=sdxsframe"
    c2, r2 = open_stream(srv, query)
    first = read_parts(r1, 5)
    second = read_parts(r2, 2)
    assert len(first) == 5 and len(second) == 2
    m = srv.metrics()
    assert m["sdxs_streams"] == 1 and m["sdxs_stream_viewers"] == 2
    c1.close()
    c2.close()

    # Frames are JPEGs of the size asked; frames at walk 0 start from their seed's own noise,
    # so they are the txt2img picture of that seed, byte for byte.
    frames = [int(h["x-frame"]) for h, _ in first]
    assert frames == sorted(frames) and len(set(frames)) == 5
    checked = 0
    for h, jpeg in first:
        assert pixels(jpeg).shape == (128, 128, 3)
        if float(h["x-walk"]) == 0.0:
            status, _, ref = srv.post("/v1/txt2img", {"prompt": "a walk", "seed":
                                                      int(h["x-seed"]), "format": "jpeg",
                                                      "quality": 80})
            assert status == 200 and ref == jpeg, h
            checked += 1
    assert checked >= 2
    # Between seeds the frames differ from both ends.
    mids = [j for h, j in first if float(h["x-walk"]) > 0]
    assert mids and all(j != first[0][1] for j in mids)

    # Everyone left: the producer ends and the gauges return to zero.
    for _ in range(100):
        m = srv.metrics()
        if m["sdxs_streams"] == 0 and m["sdxs_stream_viewers"] == 0:
            break
        time.sleep(0.1)
    assert m["sdxs_streams"] == 0 and m["sdxs_stream_viewers"] == 0


def test_stream_rate_and_errors(srv):
    c, r = open_stream(srv, {"prompt": "paced", "fps": 4})
    t0 = time.monotonic()
    parts = read_parts(r, 5)
    elapsed = time.monotonic() - t0
    c.close()
    assert len(parts) == 5 and elapsed >= 0.75, elapsed  # 4 intervals at 4 frames/s
    for q, param in [({"fps": 1000}, "fps"), ({"width": 100}, "width"),
                     ({"quality": 0}, "quality")]:
        status, _, data = srv.get("/v1/stream?" + urllib.parse.urlencode(q))
        error_of(status, data, 400, param)
    status, h, data = srv.post("/v1/stream")
    error_of(status, data, 405)


def test_clients_going_away_disturb_no_one(srv):
    # Mid-request: the request is sent, the connection closed before the answer.
    for _ in range(5):
        sock = socket.create_connection((srv.host, srv.port))
        body = json.dumps({"prompt": "gone", "width": 256, "height": 256}).encode()
        sock.sendall(b"POST /v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        sock.close()
    # Mid-body and mid-stream.
    sock = socket.create_connection((srv.host, srv.port))
    sock.sendall(b"POST /v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"prompt\":")
    sock.close()
    c, r = open_stream(srv, {"prompt": "left", "seed": 3})
    assert len(read_parts(r, 1)) == 1
    c.close()
    # Others are served as usual, and the stream's producer stops.
    status, _, data = srv.post("/v1/txt2img", {"prompt": "still here", "seed": 2})
    assert status == 200 and pixels(data).shape == (128, 128, 3)
    for _ in range(100):
        m = srv.metrics()
        if m["sdxs_stream_viewers"] == 0 and m["sdxs_queue_depth"] == 0:
            break
        time.sleep(0.1)
    assert m["sdxs_stream_viewers"] == 0 and m["sdxs_queue_depth"] == 0


# ---- life cycle ----

def test_graceful_shutdown_finishes_in_flight():
    s = Server("--max-batch", "1", "--batch-wait-ms", "0")
    try:
        results = []
        body = {"prompt": "in flight", "width": 384, "height": 384}
        threads = [threading.Thread(target=lambda: results.append(s.post("/v1/txt2img", body)))
                   for _ in range(3)]
        for t in threads:
            t.start()
        for _ in range(500):  # all three accepted, none answered yet
            if s.metrics()["sdxs_queue_depth"] == 3:
                break
            time.sleep(0.01)
        c, r = open_stream(s, {"prompt": "ending"})
        assert len(read_parts(r, 1)) == 1
        s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(300)
        rest = r.read()  # the stream ends instead of hanging
        c.close()
        rc = s.stop()
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
    assert rc == 0, s.log()
    assert [x[0] for x in results] == [200, 200, 200]
    assert all(pixels(x[2]).shape == (384, 384, 3) for x in results)
    assert isinstance(rest, bytes)
    assert any("SIGTERM" in x for x in s.log_lines) and any("stopped" in x for x in s.log_lines)
    with pytest.raises(OSError):
        socket.create_connection((s.host, s.port), timeout=2).close()


def test_access_log(srv):
    status, h, _ = srv.get("/v1/models")
    rid = h["x-request-id"]
    for _ in range(50):
        lines = [x for x in srv.log_lines if f"access: id={rid} " in x]
        if lines:
            break
        time.sleep(0.05)
    assert len(lines) == 1, srv.log()
    assert re.search(r"^\S+Z info  access: id=\d+ GET /v1/models 200 \d+ bytes [\d.]+ ms$",
                     lines[0]), lines[0]


def test_https(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"])
    with serving("--tls-cert", str(cert), "--tls-key", str(key)) as s:
        assert s.scheme == "https"
        status, _, data = s.get("/healthz")
        assert status == 200
        status, h, data = s.post("/v1/txt2img", {"prompt": "secure", "seed": 5})
        assert status == 200 and pixels(data).shape == (128, 128, 3)
        # Plain HTTP on the TLS port gets no answer.
        with pytest.raises((http.client.HTTPException, OSError)):
            c = http.client.HTTPConnection(s.host, s.port, timeout=5)
            c.request("GET", "/healthz")
            c.getresponse().read()
    r = run([exe("sdxs"), "serve", "--port", "0", "--tls-cert", str(cert)], check=False)
    assert r.returncode == 2 and "--tls-key" in r.stderr


def test_bad_flags():
    for args in [["--port", "70000"], ["--max-batch", "0"], ["--nope", "1"],
                 ["--max-queue", "x"]]:
        r = run([exe("sdxs"), "serve", *args], check=False)
        assert r.returncode == 2, (args, r.stderr)
