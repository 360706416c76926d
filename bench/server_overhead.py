"""Benchmark (not a test): what HTTP on loopback adds to the engine's latency, and whether a frame
stream keeps up with the engine. Starts `sdxs serve` on port 0, sends sequential requests and
splits each round trip with the server's own Server-Timing header:

  round trip = HTTP (client + sockets + parsing + sending) + queue + engine + encode

Prints a table (medians and 90th percentiles over --requests requests per size), then the frame
rate of GET /v1/stream at fps=0 (as fast as the engine allows) against 1000 / engine ms.

usage: .venv/bin/python bench/server_overhead.py [--sdxs build/sdxs] [--model DIR]
       [--requests 200] [--sizes 128,256,512] [--stream-seconds 5]
(--model defaults to the tiny random-weight test model, built on first use.)
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def start(sdxs, model):
    proc = subprocess.Popen([sdxs, "serve", "--model", model, "--port", "0", "--batch-wait-ms",
                             "0"], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"ready: .*:(\d+)$", line)
        if m:
            break
    else:
        raise SystemExit("the server did not start")
    # Keep reading its log (the access lines) so that the pipe never fills.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, int(m.group(1))


def timing(header):
    return {k: float(v) for k, v in re.findall(r"(\w+);dur=([\d.]+)", header)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdxs", default=os.path.join(ROOT, "build", "sdxs"))
    ap.add_argument("--model")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--sizes", default="128,256,512")
    ap.add_argument("--stream-seconds", type=float, default=5)
    a = ap.parse_args()
    model = a.model
    if not model:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from models import model_dir
        model = model_dir("tiny-dreamshaper")
    proc, port = start(a.sdxs, model)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port)  # keep-alive, as a client would
        print(f"model {os.path.basename(model)}, {a.requests} sequential POST /v1/txt2img per "
              "size (PNG), keep-alive, loopback; milliseconds, median (p90)")
        print("| size | round trip | engine | queue | encode | HTTP overhead |")
        print("|---|---|---|---|---|---|")
        engine_ms = {}
        for side in [int(s) for s in a.sizes.split(",")]:
            rows = []
            body = json.dumps({"prompt": "a benchmark", "width": side, "height": side})
            for i in range(a.requests + 5):
                t0 = time.perf_counter()
                conn.request("POST", "/v1/txt2img", body=body,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                rt = (time.perf_counter() - t0) * 1e3
                assert r.status == 200, r.status
                t = timing(r.getheader("Server-Timing"))
                if i >= 5:  # warm-up
                    rows.append((rt, t["engine"], t["queue"], t["encode"],
                                 rt - t["engine"] - t["queue"] - t["encode"]))
            cols = list(zip(*rows))
            engine_ms[side] = pct(cols[1], 50)
            print(f"| {side}x{side} | " + " | ".join(
                f"{pct(c, 50):.2f} ({pct(c, 90):.2f})" for c in cols) + " |")

        side = min(engine_ms)
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("GET", f"/v1/stream?prompt=bench&fps=0&width={side}&height={side}")
        r = c.getresponse()
        frames, t0 = 0, None
        while True:
            line = r.readline()
            if not line:
                break
            if line.strip() == b"--sdxsframe":
                if t0 is None:
                    t0 = time.perf_counter()
                else:
                    frames += 1
                if t0 and time.perf_counter() - t0 >= a.stream_seconds:
                    break
        dt = time.perf_counter() - t0
        c.close()
        print(f"\nstream {side}x{side} at fps=0: {frames / dt:.1f} frames/s; engine alone "
              f"(1000 / median engine ms): {1000 / engine_ms[side]:.1f} images/s")
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
