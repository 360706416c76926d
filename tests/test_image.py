"""The image module (engine/image.c, engine/canny.c, through tests/tools/image.c) against the
references: decoding against Pillow (and against the pixels the test itself wrote), the Lanczos
resize against Pillow 12's Image.resize(size, Image.LANCZOS), Canny against OpenCV's
cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), low, high) and cv2.Canny(rgb, low, high), the
control-image preparation against the same steps done with Pillow and OpenCV, PNG text chunks
read back with Pillow, JPEG encoding against Pillow's encoder (the same libjpeg-turbo).

All comparisons are exact (0 differing values), which the code is built for: the decoders and
encoders are the same libraries, and the resize and Canny repeat the references' integer
arithmetic. Every picture is generated here; nothing is committed.
"""
import io
import os
import struct
import zlib

import cv2
import numpy as np
import PIL
import pytest
from PIL import Image, ImageDraw, ImageOps

from conftest import exe, run

SUBDIR = "image"


@pytest.fixture(scope="module")
def work(data_dir):
    path = os.path.join(data_dir, SUBDIR)
    os.makedirs(path, exist_ok=True)
    return path


def tool(*args, check=True):
    args = [a if isinstance(a, bytes) else str(a) for a in args]
    return run([exe("sdxs-image")] + args, check=check, timeout=120)


def read_ppm(path):
    with open(path, "rb") as f:
        data = f.read()
    magic, w, h, maxval, pixels = data.split(maxsplit=4)
    assert magic == b"P6" and maxval == b"255"
    w, h = int(w), int(h)
    return np.frombuffer(pixels, dtype=np.uint8).reshape(h, w, 3)


def save_png(work, name, rgb):
    path = os.path.join(work, name)
    Image.fromarray(rgb, "RGB").save(path)
    return path


# ---- generated pictures ----

def photo(w, h, seed):
    """A photograph-like RGB picture: smooth colour fields, noise, filled shapes, thin lines and
    text strokes, so every code path (flat areas, soft and hard edges, fine detail) is exercised."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64) / max(w, h)
    base = np.stack([128 + 100 * np.sin(3 * x + seed), 128 + 90 * np.cos(4 * y + 1),
                     128 + 80 * np.sin(2.5 * (x + y) + 0.5 * seed)], -1)
    base += rng.normal(0, 5, (h, w, 3))
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, x1 = sorted(rng.integers(0, w, 2))
        y0, y1 = sorted(rng.integers(0, h, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.ellipse([x0, y0, x1, y1], outline=colour, width=int(rng.integers(1, 4)))
    for _ in range(4):
        pts = [tuple(int(v) for v in (rng.integers(0, w), rng.integers(0, h))) for _ in range(2)]
        draw.line(pts, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=1)
    for i in range(3):
        draw.text((int(rng.integers(0, max(1, w - 60))), int(rng.integers(0, max(1, h - 12)))),
                  f"Sdxs {seed}{i} kg", fill=(int(rng.integers(0, 80)),) * 3)
    return np.asarray(im).copy()


def sketch(w, h, seed):
    """Dark strokes on white, like a drawing on paper."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for _ in range(8):
        pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
        draw.line(pts, fill=(int(rng.integers(0, 60)),) * 3, width=int(rng.integers(1, 5)))
    return np.asarray(im).copy()


def on_white(rgba):
    """The decoder's documented compositing: (c * a + 255 * (255 - a)) / 255 rounded to
    nearest, in integers."""
    c = rgba[..., :3].astype(np.int64)
    a = rgba[..., 3:].astype(np.int64)
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


# ---- a PNG writer for the formats Pillow cannot write (16-bit colour, interlaced, low depths
# with transparency) ----

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_rows(samples, depth):
    """Filter-0 scanlines of samples (H, W, C)."""
    out = []
    for row in samples:
        if depth == 16:
            raw = row.astype(">u2").tobytes()
        elif depth == 8:
            raw = row.astype(np.uint8).tobytes()
        else:
            bits = ((row.reshape(-1)[:, None] >> np.arange(depth - 1, -1, -1)) & 1).astype(np.uint8)
            raw = np.packbits(bits.reshape(-1)).tobytes()
        out.append(b"\0" + raw)
    return b"".join(out)


def png_file(samples, color_type, depth, palette=None, trns=None, interlace=False):
    h, w = samples.shape[:2]
    if interlace:
        body = b"".join(png_rows(samples[y0::dy, x0::dx], depth)
                        for x0, y0, dx, dy in ADAM7 if samples[y0::dy, x0::dx].size)
    else:
        body = png_rows(samples, depth)
    out = b"\x89PNG\r\n\x1a\n"
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0,
                                          1 if interlace else 0))
    if palette is not None:
        out += png_chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    out += png_chunk(b"IDAT", zlib.compress(body, 6))
    return out + png_chunk(b"IEND", b"")


def png_cases():
    """(name, file bytes, the RGB pixels the decoder must produce)."""
    rng = np.random.default_rng(7)
    h, w = 37, 53  # odd sizes: partial Adam7 blocks and partial bytes at low depths
    cases = []
    for interlace in (False, True):
        tag = "-adam7" if interlace else ""
        rgb8 = rng.integers(0, 256, (h, w, 3))
        cases.append((f"rgb8{tag}", png_file(rgb8, 2, 8, interlace=interlace), rgb8))
        rgb16 = rng.integers(0, 65536, (h, w, 3))
        cases.append((f"rgb16{tag}", png_file(rgb16, 2, 16, interlace=interlace), rgb16 >> 8))
        rgba8 = rng.integers(0, 256, (h, w, 4))
        rgba8[:5, :, 3] = 0
        rgba8[5:10, :, 3] = 255
        cases.append((f"rgba8{tag}", png_file(rgba8, 6, 8, interlace=interlace), on_white(rgba8)))
        rgba16 = rng.integers(0, 65536, (h, w, 4))
        cases.append((f"rgba16{tag}", png_file(rgba16, 6, 16, interlace=interlace),
                      on_white(rgba16 >> 8)))
        for depth in (1, 2, 4, 8, 16):
            grey = rng.integers(0, 2 ** depth, (h, w, 1))
            # Low depths scale to 8 bits by repeating their bits (0b10 -> 0b10101010).
            g8 = grey >> 8 if depth == 16 else grey * 255 // (2 ** depth - 1)
            cases.append((f"grey{depth}{tag}", png_file(grey, 0, depth, interlace=interlace),
                          np.repeat(g8, 3, axis=2)))
        ga = rng.integers(0, 256, (h, w, 2))
        cases.append((f"greyalpha8{tag}", png_file(ga, 4, 8, interlace=interlace),
                      on_white(np.concatenate([np.repeat(ga[..., :1], 3, 2), ga[..., 1:]], 2))))
        ga16 = rng.integers(0, 65536, (h, w, 2)) >> 8 << 8 | rng.integers(0, 256, (h, w, 2))
        g16 = ga16 >> 8
        cases.append((f"greyalpha16{tag}", png_file(ga16, 4, 16, interlace=interlace),
                      on_white(np.concatenate([np.repeat(g16[..., :1], 3, 2), g16[..., 1:]], 2))))
        for depth in (1, 4, 8):
            n = 2 ** depth
            palette = rng.integers(0, 256, (n, 3))
            idx = rng.integers(0, n, (h, w, 1))
            cases.append((f"palette{depth}{tag}", png_file(idx, 3, depth, palette=palette,
                                                            interlace=interlace),
                          palette[idx[..., 0]]))
            alpha = rng.integers(0, 256, n)
            alpha[0] = 0
            rgba = np.concatenate([palette[idx[..., 0]], alpha[idx]], 2)
            trns = alpha[: max(1, n // 2)]  # a short tRNS: later entries are opaque
            rgba[..., 3] = np.where(idx[..., 0] < len(trns), rgba[..., 3], 255)
            cases.append((f"palette{depth}-trns{tag}",
                          png_file(idx, 3, depth, palette=palette, trns=trns.astype(np.uint8)
                                   .tobytes(), interlace=interlace), on_white(rgba)))
        # Colour-key transparency: pixels equal to the key become fully transparent (white).
        keyed = rng.integers(0, 4, (h, w, 3)) * 60
        key = np.array([60, 120, 0])
        rgba = np.concatenate([keyed, np.where((keyed == key).all(2, keepdims=True), 0, 255)], 2)
        cases.append((f"rgb8-key{tag}", png_file(keyed, 2, 8, trns=struct.pack(">HHH", *key),
                                                 interlace=interlace), on_white(rgba)))
    return cases


PNG_CASES = png_cases()


def pillow_rgb(data):
    """What Pillow makes of a file, composited on white as the decoder does; None where Pillow
    itself cannot give 8-bit RGB (16-bit grey is clipped, not scaled, by its I;16 -> L)."""
    im = Image.open(io.BytesIO(data))
    im.load()
    if im.mode in ("I;16", "I;16B", "I"):
        return None
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        return on_white(np.asarray(im.convert("RGBA")))
    return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("name,data,expected", PNG_CASES, ids=[c[0] for c in PNG_CASES])
def test_png_decode(work, name, data, expected):
    path = os.path.join(work, f"dec-{name}.png")
    with open(path, "wb") as f:
        f.write(data)
    out = os.path.join(work, f"dec-{name}.ppm")
    tool("decode", path, out)
    ours = read_ppm(out)
    expected = expected.astype(np.uint8)
    assert ours.shape == expected.shape
    assert np.array_equal(ours, expected), f"{int((ours != expected).sum())} values differ"
    ref = pillow_rgb(data)
    if ref is not None:
        # The file writer and the expected pixels agree with Pillow's reading of the file.
        assert np.array_equal(ref, expected), f"Pillow reads {name} differently"


def jpeg_cases():
    rgb = photo(67, 45, 3)
    cases = []
    for kind, opts, mode in [("baseline", dict(quality=90), "RGB"),
                             ("q20-444", dict(quality=20, subsampling=0), "RGB"),
                             ("progressive", dict(quality=85, progressive=True), "RGB"),
                             ("optimized", dict(quality=75, optimize=True), "RGB"),
                             ("grey", dict(quality=90), "L"),
                             ("grey-progressive", dict(quality=90, progressive=True), "L"),
                             ("cmyk", dict(quality=90), "CMYK")]:
        buf = io.BytesIO()
        Image.fromarray(rgb, "RGB").convert(mode).save(buf, "JPEG", **opts)
        cases.append((kind, buf.getvalue()))
    return cases


JPEG_CASES = jpeg_cases()


@pytest.mark.parametrize("name,data", JPEG_CASES, ids=[c[0] for c in JPEG_CASES])
def test_jpeg_decode(work, name, data):
    path = os.path.join(work, f"dec-{name}.jpg")
    with open(path, "wb") as f:
        f.write(data)
    out = os.path.join(work, f"dec-{name}.ppm")
    tool("decode", path, out)
    ours = read_ppm(out)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert ours.shape == ref.shape
    assert np.array_equal(ours, ref), f"{int((ours != ref).sum())} values differ from Pillow"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation(work, fmt):
    """Every EXIF orientation is applied as PIL.ImageOps.exif_transpose applies it (diffusers'
    load_image), on a picture whose width and height differ."""
    rgb = photo(29, 18, 2)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt, exif=exif.tobytes(), quality=95)
        path = os.path.join(work, f"exif-{orientation}.{fmt.lower()}")
        with open(path, "wb") as f:
            f.write(buf.getvalue())
        out = os.path.join(work, f"exif-{orientation}.ppm")
        tool("decode", path, out)
        ours = read_ppm(out)
        ref = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        assert ours.shape == ref.shape, f"orientation {orientation}"
        assert np.array_equal(ours, ref), f"orientation {orientation}"


def test_decode_errors(work):
    """Bad files fail with exit code 3 and a message saying why (the C unit tests cover more)."""
    good = png_file(np.zeros((8, 8, 3), np.int64), 2, 8)
    huge = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2,
                                                                  0, 0, 0))
    cases = {"empty": (b"", "empty"), "text": (b"hello world, no image", "not a PNG or JPEG"),
             "truncated": (good[: len(good) - 20], "truncated"),
             "huge": (huge, "max_width")}
    for name, (data, words) in cases.items():
        path = os.path.join(work, f"bad-{name}.bin")
        with open(path, "wb") as f:
            f.write(data)
        proc = tool("decode", path, os.path.join(work, "bad.ppm"), check=False)
        assert proc.returncode == 3, f"{name}: exit {proc.returncode}: {proc.stderr}"
        assert words in proc.stderr, f"{name}: {proc.stderr}"
    # Limits given by the caller are honoured.
    path = save_png(work, "limit.png", photo(40, 30, 1))
    proc = tool("decode", path, os.path.join(work, "bad.ppm"), 39, 100, 0, check=False)
    assert proc.returncode == 3 and "over the limit of 39 (max_width)" in proc.stderr
    proc = tool("decode", path, os.path.join(work, "bad.ppm"), 0, 0, 1199, check=False)
    assert proc.returncode == 3 and "max_pixels" in proc.stderr
    tool("decode", path, os.path.join(work, "ok.ppm"), 40, 30, 1200)


# ---- Lanczos resize ----

RESIZES = [
    ((64, 48), (512, 512)),     # up both ways
    ((640, 480), (512, 512)),   # down across, up down
    ((1000, 700), (97, 61)),    # strong reduction: wide windows
    ((300, 200), (299, 201)),   # nearly the same size
    ((100, 37), (333, 211)),
    ((512, 512), (512, 256)),   # one pass only: vertical
    ((512, 512), (128, 512)),   # one pass only: horizontal
    ((1, 1), (5, 7)),
    ((7, 1), (3, 3)),
    ((3, 9), (1, 1)),
    ((2, 2), (2, 2)),           # same size: a copy
]


@pytest.mark.parametrize("src,dst", RESIZES, ids=[f"{s[0]}x{s[1]}-{d[0]}x{d[1]}"
                                                   for s, d in RESIZES])
def test_resize_matches_pillow(work, src, dst):
    rgb = photo(src[0], src[1], src[0] + src[1])
    path = save_png(work, f"rs-{src[0]}x{src[1]}.png", rgb)
    out = os.path.join(work, f"rs-{dst[0]}x{dst[1]}.ppm")
    tool("resize", path, dst[0], dst[1], out)
    ours = read_ppm(out)
    ref = np.asarray(Image.fromarray(rgb).resize(dst, Image.LANCZOS))
    assert ours.shape == ref.shape
    diff = np.abs(ours.astype(int) - ref.astype(int))
    print(f"{src} -> {dst}: {int((diff > 0).sum())} of {diff.size} values differ, "
          f"max {int(diff.max())}")
    assert diff.max() == 0


def test_resize_bad_size(work):
    path = save_png(work, "rs-bad.png", photo(8, 8, 0))
    proc = tool("resize", path, 0, 8, os.path.join(work, "x.ppm"), check=False)
    assert proc.returncode == 2 and "error: width:" in proc.stderr
    proc = tool("resize", path, 8, 9000, os.path.join(work, "x.ppm"), check=False)
    assert proc.returncode == 2 and "error: height:" in proc.stderr


# ---- Canny ----

def cv_canny(rgb, low, high, colour=False):
    if colour:
        return cv2.Canny(rgb, low, high)
    return cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), low, high)


CANNY = [((256, 192), 100, 200), ((256, 192), 50, 150), ((256, 192), 10, 30),
         ((256, 192), 200, 100), ((256, 192), 99.5, 199.5), ((97, 131), 100, 200),
         ((512, 512), 100, 200), ((3, 2), 0, 0), ((1, 1), 100, 200)]


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
@pytest.mark.parametrize("size,low,high", CANNY,
                         ids=[f"{s[0]}x{s[1]}-{lo}-{hi}" for s, lo, hi in CANNY])
def test_canny_matches_opencv(work, size, low, high, colour):
    rgb = photo(size[0], size[1], 11 + size[0])
    path = save_png(work, f"cn-{size[0]}x{size[1]}.png", rgb)
    out = os.path.join(work, f"cn-{size[0]}x{size[1]}.ppm")
    tool("canny", path, low, high, out, "rgb" if colour else "grey")
    ours = read_ppm(out)
    ref = cv_canny(rgb, low, high, colour)
    # Edges are white in all three channels.
    assert np.array_equal(ours[..., 0], ours[..., 1]) and np.array_equal(ours[..., 0],
                                                                          ours[..., 2])
    differ = int((ours[..., 0] != ref).sum())
    print(f"{size} ({low}, {high}) {'rgb' if colour else 'grey'}: {int((ref > 0).sum())} edge "
          f"pixels, {differ} differ")
    assert differ == 0


def test_canny_colour_edges(work):
    """Two colours of the same grey: only the colour detector sees the border between them."""
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :30] = (200, 50, 50)
    rgb[:, 30:] = (50, 119, 50)
    assert len(np.unique(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))) <= 2
    path = save_png(work, "cn-colour.png", rgb)
    for colour, kind in ((False, "grey"), (True, "rgb")):
        out = os.path.join(work, f"cn-colour-{kind}.ppm")
        tool("canny", path, 100, 200, out, kind)
        ours = read_ppm(out)[..., 0]
        assert np.array_equal(ours, cv_canny(rgb, 100, 200, colour))
        assert (ours.sum() > 0) == colour


def test_canny_on_sketch(work):
    rgb = sketch(320, 240, 5)
    path = save_png(work, "cn-sketch.png", rgb)
    out = os.path.join(work, "cn-sketch.ppm")
    tool("canny", path, 100, 200, out, "grey")
    ref = cv_canny(rgb, 100, 200)
    assert (ref > 0).sum() > 500
    assert np.array_equal(read_ppm(out)[..., 0], ref)


def test_canny_bad_threshold(work):
    path = save_png(work, "cn-bad.png", photo(8, 8, 0))
    proc = tool("canny", path, -1, 100, os.path.join(work, "x.ppm"), "grey", check=False)
    assert proc.returncode == 2 and "canny_low" in proc.stderr
    proc = tool("canny", path, 1, "nan", os.path.join(work, "x.ppm"), "rgb", check=False)
    assert proc.returncode == 2 and "canny_high" in proc.stderr


# ---- control-image preparation ----

@pytest.mark.parametrize("mode", ["none", "sketch", "canny"])
def test_control_prepare(work, mode):
    rgb = sketch(300, 220, 9) if mode == "sketch" else photo(300, 220, 9)
    path = save_png(work, f"ctl-{mode}.png", rgb)
    out = os.path.join(work, f"ctl-{mode}.ppm")
    tool("control", path, mode, 256, 192, out)
    ours = read_ppm(out)
    sized = np.asarray(Image.fromarray(rgb).resize((256, 192), Image.LANCZOS))
    if mode == "none":
        ref = sized
    elif mode == "sketch":
        ref = 255 - sized
    else:
        # The ControlNet annotator and diffusers' example: cv2.Canny on the RGB array.
        ref = np.repeat(cv2.Canny(sized, 100, 200)[..., None], 3, axis=2)
    assert np.array_equal(ours, ref), f"{int((ours != ref).sum())} values differ"


# ---- encoders ----

def png_chunks(data):
    pos, out = 8, []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((kind, data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def test_png_round_trip_with_text(work):
    rgb = photo(129, 67, 4)
    src = save_png(work, "enc-src.png", rgb)
    out = os.path.join(work, "enc.png")
    pairs = {"prompt": "a red fox in the snow, 35mm photo", "seed": "42",
             "parameters": "steps: 1\nsize: 512x512", "unicode": "caf\u00e9 \u732b \U0001f98a"}
    args = [x for kv in pairs.items() for x in kv]
    tool("png", src, out, *args)
    im = Image.open(out)
    assert im.mode == "RGB" and im.size == (129, 67)
    assert np.array_equal(np.asarray(im), rgb)
    assert dict(im.text) == pairs
    kinds = {kind for kind, _ in png_chunks(open(out, "rb").read())}
    assert b"tEXt" in kinds and b"iTXt" in kinds  # ASCII in tEXt, other UTF-8 in iTXt
    # And the engine reads back its own file.
    tool("decode", out, os.path.join(work, "enc.ppm"))
    assert np.array_equal(read_ppm(os.path.join(work, "enc.ppm")), rgb)


def test_png_bad_text(work):
    src = save_png(work, "enc-src2.png", photo(8, 8, 1))
    for key in ["", " lead", "trail ", "two  spaces", "k" * 80, "tab\there"]:
        proc = tool("png", src, os.path.join(work, "x.png"), key, "v", check=False)
        assert proc.returncode == 2 and "error: text:" in proc.stderr, (key, proc.stderr)
    proc = tool("png", src, os.path.join(work, "x.png"), "k", b"caf\xe9", check=False)
    assert proc.returncode == 2 and "UTF-8" in proc.stderr, proc.stderr


JPEG_QUALITIES = [1, 50, 90, 100]


@pytest.mark.parametrize("quality", JPEG_QUALITIES)
def test_jpeg_encode_matches_pillow(work, quality):
    rgb = photo(131, 77, 6)
    src = save_png(work, "jenc-src.png", rgb)
    out = os.path.join(work, f"jenc-{quality}.jpg")
    tool("jpeg", src, quality, out)
    ours = Image.open(out)
    assert ours.format == "JPEG" and ours.mode == "RGB" and ours.size == (131, 77)
    assert "progressive" not in ours.info  # baseline
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    ref = np.asarray(Image.open(buf).convert("RGB"))
    # Same library, same settings (4:2:0, integer DCT, the scaled standard tables): the same
    # pixels after decoding.
    assert np.array_equal(np.asarray(ours.convert("RGB")), ref)


def test_jpeg_quality_orders_error(work):
    """Higher quality, smaller error: the quality reaches the quantisation tables."""
    rgb = photo(131, 77, 6)
    src = save_png(work, "jq-src.png", rgb)
    errors = []
    for quality in JPEG_QUALITIES:
        out = os.path.join(work, f"jq-{quality}.jpg")
        tool("jpeg", src, quality, out)
        got = np.asarray(Image.open(out).convert("RGB")).astype(int)
        errors.append(float(np.abs(got - rgb.astype(int)).mean()))
    print("mean abs error by quality", dict(zip(JPEG_QUALITIES, errors)))
    assert errors == sorted(errors, reverse=True) and len(set(errors)) == len(errors)


def test_jpeg_bad_quality(work):
    src = save_png(work, "jenc-bad.png", photo(8, 8, 1))
    for q in (0, 101, -5):
        proc = tool("jpeg", src, q, os.path.join(work, "x.jpg"), check=False)
        assert proc.returncode == 2 and "error: quality:" in proc.stderr, proc.stderr


def test_reference_versions():
    """The figures in this file were measured against these versions."""
    assert PIL.__version__.startswith("12."), PIL.__version__
    assert cv2.__version__.startswith("4."), cv2.__version__
