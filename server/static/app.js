// app.js: the demo page's modes. Each mode keeps at most one request in flight and sends the
// newest input when the previous answer is back, so latency stays at one round trip however
// fast the input changes. window.sdxsDemo exposes the modes and their counters (the browser
// test drives the page through it).
"use strict";

const $ = (id) => document.getElementById(id);
const demo = { modes: {}, stats: {}, model: null };
window.sdxsDemo = demo;

// ---- shared: parameters, requests, drawing, statistics ----

function params() {
  const [w, h] = ($("size").value || "512x512").split("x").map(Number);
  return { prompt: $("prompt").value, seed: Number($("seed").value) || 0, width: w, height: h };
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = $("apikey").value;
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

// fetch that turns the server's JSON errors into exceptions carrying their message.
async function call(url, options) {
  const resp = await fetch(url, options);
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { msg = (await resp.json()).error.message; } catch (e) { /* not JSON */ }
    if (resp.status === 401) $("keybox").hidden = false;
    throw new Error(msg);
  }
  return resp;
}

async function drawBlob(canvas, blob) {
  const bmp = await createImageBitmap(blob);
  canvas.width = bmp.width;
  canvas.height = bmp.height;
  canvas.getContext("2d").drawImage(bmp, 0, 0);
  bmp.close();
}

function newStats(name) {
  const s = { frames: 0, errors: 0, latencyMs: 0, fps: 0, serverMs: 0, times: [] };
  demo.stats[name] = s;
  return s;
}

function record(s, t0, resp) {
  const now = performance.now();
  s.frames++;
  s.latencyMs = now - t0;
  s.times.push(now);
  while (s.times.length && now - s.times[0] > 2000) s.times.shift();
  s.fps = s.times.length > 1 ? (s.times.length - 1) * 1000 / (now - s.times[0]) : 0;
  const timing = resp && resp.headers.get("Server-Timing");
  if (timing) {
    const m = /engine;dur=([\d.]+)/.exec(timing);
    if (m) s.serverMs = Number(m[1]);
  }
  $("stats").textContent = `${s.fps.toFixed(1)} frames/s · round trip ${s.latencyMs.toFixed(0)}` +
    ` ms · engine ${s.serverMs.toFixed(0)} ms · ${s.frames} frames`;
  $("error").textContent = "";
}

function fail(s, e) {
  s.errors++;
  $("error").textContent = String(e.message || e);
}

// A loop that runs step() whenever it is asked to and no step is running: input events call
// poke(); a step started while another runs is folded into one follow-up.
function oneInFlight(step) {
  let running = false, again = false;
  return async function poke() {
    if (running) { again = true; return; }
    running = true;
    do {
      again = false;
      try { await step(); } catch (e) { /* step reports its own errors */ }
    } while (again);
    running = false;
  };
}

// ---- (a) type a prompt, watch the picture follow ----

demo.modes.type = (() => {
  const s = newStats("type");
  const poke = oneInFlight(async () => {
    const p = params(), t0 = performance.now();
    try {
      const resp = await call("/v1/txt2img", {
        method: "POST", headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify(Object.assign(p, { format: "jpeg" })),
      });
      await drawBlob($("type-out"), await resp.blob());
      s.lastPrompt = p.prompt;
      record(s, t0, resp);
    } catch (e) { fail(s, e); }
  });
  return { start: poke, stop() {}, poke };
})();

// ---- (b) webcam to picture ----

demo.modes.webcam = (() => {
  const s = newStats("webcam");
  let stream = null, active = false;
  const grab = document.createElement("canvas");

  async function frameBlob(w, h) {
    const v = $("webcam-in");
    const side = Math.min(v.videoWidth, v.videoHeight); // centre square, scaled to the size
    grab.width = w;
    grab.height = h;
    grab.getContext("2d").drawImage(v, (v.videoWidth - side) / 2, (v.videoHeight - side) / 2,
                                    side, side, 0, 0, w, h);
    return new Promise((ok) => grab.toBlob(ok, "image/jpeg", 0.85));
  }

  async function loop() {
    while (active) {
      const v = $("webcam-in");
      if (!v.videoWidth) { await new Promise((r) => setTimeout(r, 50)); continue; }
      const p = params(), t0 = performance.now();
      // Image-to-image, or the frame's canny edges through the ControlNet when ticked.
      const canny = $("webcam-canny").checked;
      const q = new URLSearchParams(Object.assign({ prompt: p.prompt, seed: p.seed,
        width: p.width, height: p.height, format: "jpeg" },
        canny ? { control_mode: "canny" } : { strength: $("strength").value }));
      try {
        const body = await frameBlob(p.width, p.height);
        const resp = await call((canny ? "/v1/controlnet?" : "/v1/img2img?") + q, {
          method: "POST", headers: headers({ "Content-Type": "image/jpeg" }), body });
        await drawBlob($("webcam-out"), await resp.blob());
        record(s, t0, resp);
      } catch (e) {
        fail(s, e);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  return {
    async start() {
      if (active) return;
      try {
        stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      } catch (e) {
        fail(s, new Error("no webcam: " + e.message +
          (location.hostname === "localhost" || location.protocol === "https:" ? "" :
           " (browsers allow the webcam only on https:// or localhost)")));
        return;
      }
      $("webcam-in").srcObject = stream;
      active = true;
      $("webcam-toggle").textContent = "Stop webcam";
      loop();
    },
    stop() {
      active = false;
      if (stream) stream.getTracks().forEach((t) => t.stop());
      stream = null;
      $("webcam-toggle").textContent = "Start webcam";
    },
    get active() { return active; },
  };
})();

// ---- (c) the frame stream: multipart/x-mixed-replace read part by part ----

demo.modes.stream = (() => {
  const s = newStats("stream");
  let abort = null;
  const enc = new TextEncoder(), dec = new TextDecoder();
  const CRLF2 = enc.encode("\r\n\r\n");

  function indexOf(buf, pat, from) {
    outer: for (let i = from; i <= buf.length - pat.length; i++) {
      for (let j = 0; j < pat.length; j++) if (buf[i + j] !== pat[j]) continue outer;
      return i;
    }
    return -1;
  }

  async function run(signal) {
    const p = params();
    const q = new URLSearchParams({ prompt: p.prompt, seed: p.seed, width: p.width,
      height: p.height, fps: $("stream-fps").value });
    const key = $("apikey").value;
    if (key) q.set("api_key", key);
    const resp = await call("/v1/stream?" + q, { signal });
    const reader = resp.body.getReader();
    let buf = new Uint8Array(0), t0 = performance.now();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf);
      joined.set(value, buf.length);
      buf = joined;
      // Each part: "--boundary\r\n" headers "\r\n\r\n" Content-Length bytes of JPEG "\r\n".
      for (;;) {
        const end = indexOf(buf, CRLF2, 0);
        if (end < 0) break;
        const head = dec.decode(buf.subarray(0, end));
        const m = /Content-Length:\s*(\d+)/i.exec(head);
        if (!m) throw new Error("stream part without Content-Length");
        const len = Number(m[1]), start = end + 4;
        if (buf.length < start + len + 2) break;
        const jpeg = buf.slice(start, start + len);
        buf = buf.slice(start + len + 2);
        await drawBlob($("stream-out"), new Blob([jpeg], { type: "image/jpeg" }));
        record(s, t0, null);
        t0 = performance.now();
      }
    }
  }

  return {
    start() {
      if (abort) return;
      abort = new AbortController();
      $("stream-toggle").textContent = "Stop stream";
      run(abort.signal).catch((e) => { if (e.name !== "AbortError") fail(s, e); })
        .finally(() => { abort = null; $("stream-toggle").textContent = "Start stream"; });
    },
    stop() { if (abort) abort.abort(); },
    get active() { return abort !== null; },
  };
})();

// ---- (d) sketch to picture through a ControlNet ----
// The page side is complete; it is enabled when GET /v1/models reports "controlnet": true,
// which a server opened with a ControlNet does, and then sends the sketch as a PNG to
// POST /v1/controlnet?prompt=...&seed=...&width=...&height=...&control_mode=sketch
// (the same one-in-flight loop as the webcam).

demo.modes.sketch = (() => {
  const s = newStats("sketch");
  const pad = $("sketch-in");
  let drawing = false, enabled = false;
  let version = 0; // bumped by every change of the drawing; s.drawnVersion: the one shown

  function clear() {
    pad.width = pad.height = 512;
    const g = pad.getContext("2d");
    g.fillStyle = "#fff";
    g.fillRect(0, 0, pad.width, pad.height);
  }

  const poke = oneInFlight(async () => {
    if (!enabled) return;
    const p = params(), t0 = performance.now();
    const q = new URLSearchParams({ prompt: p.prompt, seed: p.seed, width: p.width,
      height: p.height, control_mode: "sketch", format: "jpeg" });
    try {
      const sent = version;
      const body = await new Promise((ok) => pad.toBlob(ok, "image/png"));
      const resp = await call("/v1/controlnet?" + q, {
        method: "POST", headers: headers({ "Content-Type": "image/png" }), body });
      await drawBlob($("sketch-out"), await resp.blob());
      s.drawnVersion = sent;
      record(s, t0, resp);
    } catch (e) { fail(s, e); }
  });

  function at(ev) {
    const r = pad.getBoundingClientRect();
    return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
  }
  pad.addEventListener("pointerdown", (ev) => {
    drawing = true;
    const g = pad.getContext("2d");
    g.beginPath();
    g.moveTo(...at(ev));
  });
  pad.addEventListener("pointermove", (ev) => {
    if (!drawing) return;
    const g = pad.getContext("2d");
    g.lineWidth = 6;
    g.lineCap = "round";
    g.strokeStyle = "#000";
    g.lineTo(...at(ev));
    g.stroke();
    version++;
    poke();
  });
  window.addEventListener("pointerup", () => { drawing = false; });
  clear();

  return {
    setAvailable(yes) {
      enabled = yes;
      $("sketch-status").textContent = yes ? "" :
        "This server has no ControlNet: start it with a model that has one to use this mode.";
    },
    start: poke, stop() {},
    clear() { clear(); version++; poke(); },
    get version() { return version; },
  };
})();

// ---- page set-up ----

demo.select = function (mode) {
  for (const b of document.querySelectorAll("#tabs button"))
    b.classList.toggle("active", b.dataset.mode === mode);
  for (const p of document.querySelectorAll(".panel")) p.hidden = p.dataset.panel !== mode;
  for (const [name, m] of Object.entries(demo.modes)) if (name !== mode) m.stop();
  demo.current = mode;
  if (mode === "type" || mode === "sketch") demo.modes[mode].start();
};

async function init() {
  for (const b of document.querySelectorAll("#tabs button"))
    b.addEventListener("click", () => demo.select(b.dataset.mode));
  $("webcam-toggle").addEventListener("click", () =>
    demo.modes.webcam.active ? demo.modes.webcam.stop() : demo.modes.webcam.start());
  $("stream-toggle").addEventListener("click", () =>
    demo.modes.stream.active ? demo.modes.stream.stop() : demo.modes.stream.start());
  $("sketch-clear").addEventListener("click", () => demo.modes.sketch.clear());
  $("strength").addEventListener("input", () => { $("strength-val").value = $("strength").value; });
  for (const id of ["prompt", "seed", "size"])
    $(id).addEventListener("input", () => {
      if (demo.current === "type" || demo.current === "sketch") demo.modes[demo.current].start();
    });

  let model = { id: "?", default_size: "512x512", min_side: 128, max_side: 1024,
                size_multiple: 64, controlnet: false };
  try {
    model = (await (await call("/v1/models", { headers: headers() })).json()).data[0];
  } catch (e) { fail(demo.stats.type, e); }
  demo.model = model;
  $("model").textContent = `${model.id} · ${model.backend || ""}`;
  const sizes = new Set([model.default_size]);
  for (const side of [128, 256, 384, 512, 768])
    if (side >= model.min_side && side <= model.max_side && side % model.size_multiple === 0)
      sizes.add(`${side}x${side}`);
  for (const v of sizes) $("size").add(new Option(v, v, v === model.default_size,
                                                   v === model.default_size));
  demo.modes.sketch.setAvailable(!!model.controlnet);
  $("webcam-canny").disabled = !model.controlnet;
  demo.ready = true;
  demo.select("type");
}

init();
