"""Benchmark (not a test): does GET /v1/stream keep up with the engine? Starts `sdxs serve` on
port 0 and alternates, for --rounds rounds, two measurements of --seconds each:

  engine   sequential POST /v1/txt2img requests of the stream's size; the engine's own rate is
           1000 / the median `engine` time of their Server-Timing headers (images/s)
  stream   one viewer reading GET /v1/stream?fps=0 (as fast as the engine allows) and counting
           frames; /metrics before and after gives the engine runs and engine time in the same
           window, hence the engine's own rate while it streams (1000 / its ms per frame), the
           share of the window it was running (`busy`, 1.0: never idle) and its average idle
           time per frame; the window's edges cut runs, so these carry about +-1 run of noise

and prints one row per round and the medians. On a machine shared with other work the engine's
speed drifts between the two measurements of a round; `stream / engine, same window` and
`busy` do not depend on that. With --viewers N, N connections watch the same stream (they
share frames; the slowest viewer's rate is reported).

usage: .venv/bin/python bench/stream_rate.py [--sdxs build/sdxs] [--model DIR] [--size 128]
       [--seconds 5] [--rounds 3] [--viewers 1] [--batch-wait-ms 0]
(--model defaults to the tiny random-weight test model, built on first use.)
"""
import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(sdxs, model, batch_wait_ms):
    proc = subprocess.Popen([sdxs, "serve", "--model", model, "--port", "0",
                             "--batch-wait-ms", str(batch_wait_ms)],
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"ready: .*:(\d+)$", line)
        if m:
            break
    else:
        raise SystemExit("the server did not start")
    # Keep reading its log so that the pipe never fills.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, int(m.group(1))


def engine_seconds(port):
    """Sum and count of the engine stage histogram in /metrics (seconds, runs)."""
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    total = float(re.search(r'^sdxs_stage_seconds_sum\{stage="engine"\} (\S+)$', text, re.M)[1])
    runs = int(float(re.search(r'^sdxs_stage_seconds_count\{stage="engine"\} (\S+)$', text,
                               re.M)[1]))
    return total, runs


def engine_rate(port, side, seconds):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"prompt": "a benchmark", "width": side, "height": side,
                       "format": "jpeg"})
    ms, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        conn.request("POST", "/v1/txt2img", body=body,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        ms.append(float(re.search(r"engine;dur=([\d.]+)", r.getheader("Server-Timing"))[1]))
    conn.close()
    return 1000 / statistics.median(ms[1:] or ms)


def watch(port, side, seconds, counts, i, started):
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("GET", f"/v1/stream?prompt=a+benchmark&fps=0&width={side}&height={side}")
    r = c.getresponse()
    assert r.status == 200, r.status
    started.wait()
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"--sdxsframe"):
            counts[i] += 1
    c.close()


def stream_rate(port, side, seconds, viewers):
    # Warm up: the first frames start the producer; then count over a fixed window.
    counts = [0] * viewers
    started = threading.Event()
    threads = [threading.Thread(target=watch, args=(port, side, seconds + 1, counts, i, started))
               for i in range(viewers)]
    for t in threads:
        t.start()
    started.set()
    time.sleep(1)
    n0, (e0, r0), t0 = list(counts), engine_seconds(port), time.perf_counter()
    time.sleep(seconds)
    n1, (e1, r1), t1 = list(counts), engine_seconds(port), time.perf_counter()
    for t in threads:
        t.join()
    dt = t1 - t0
    fps = [(b - a) / dt for a, b in zip(n0, n1)]
    return min(fps), (r1 - r0) / dt, (e1 - e0) / dt, 1000 * (e1 - e0) / max(1, r1 - r0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdxs", default=os.path.join(ROOT, "build", "sdxs"))
    ap.add_argument("--model")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--viewers", type=int, default=1)
    ap.add_argument("--batch-wait-ms", type=int, default=0)
    a = ap.parse_args()
    model = a.model
    if not model:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from models import model_dir
        model = model_dir("tiny-dreamshaper")
    proc, port = start(a.sdxs, model, a.batch_wait_ms)
    rows = []
    try:
        print(f"model {os.path.basename(model)}, {a.size}x{a.size}, {a.viewers} viewer(s), "
              f"--batch-wait-ms {a.batch_wait_ms}, {a.seconds:g} s per measurement")
        print("| round | engine alone (images/s) | stream (frames/s) | stream / engine alone "
              "| engine ms per frame, streaming | stream / engine, same window | engine busy "
              "| engine idle ms per frame |")
        print("|---|---|---|---|---|---|---|---|")
        for k in range(a.rounds):
            eng = engine_rate(port, a.size, a.seconds)
            fps, runs, busy, ms = stream_rate(port, a.size, a.seconds, a.viewers)
            idle = (1 - busy) * 1000 / runs if runs else float("nan")
            rows.append((eng, fps, fps / eng, ms, fps * ms / 1000, busy, idle))
            print(f"| {k + 1} | {eng:.1f} | {fps:.1f} | {fps / eng:.2f} | {ms:.1f} "
                  f"| {fps * ms / 1000:.3f} | {busy:.3f} | {idle:.1f} |", flush=True)
        med = [statistics.median(c) for c in zip(*rows)]
        print(f"| median | {med[0]:.1f} | {med[1]:.1f} | {med[2]:.2f} | {med[3]:.1f} "
              f"| {med[4]:.3f} | {med[5]:.3f} | {med[6]:.1f} |")
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
