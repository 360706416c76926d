"""The toy run's data: procedurally drawn coloured shapes with captions and their ground truth.

A scene is a plain background with one or two flat shapes (circle, square, triangle) in named
colours; two shapes stand in a named relation ("above", "below", "left of", "right of"). Every
scene comes from (seed, index) alone, so the data set, its captions and the ground truth the
evaluation checks against are reproduced exactly by anyone with the seed.
"""
import numpy as np
from PIL import Image, ImageDraw

# Six colours far apart in RGB, so that the evaluation can tell them apart by nearest colour even
# in an imperfect generated image.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (245, 215, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("above", "below", "left of", "right of")

SUPERSAMPLE = 4  # shapes are drawn 4x larger and box-filtered down: smooth, anti-aliased edges
MIN_RADIUS, MAX_RADIUS = 0.14, 0.19  # half-extent of a shape, as a fraction of the image side


def caption(spec):
    """The prompt of a scene: 'a red circle above a blue square on a yellow background'."""
    objs = spec["objects"]
    words = f"a {objs[0]['colour']} {objs[0]['shape']}"
    if len(objs) == 2:
        words += f" {spec['relation']} a {objs[1]['colour']} {objs[1]['shape']}"
    return words + f" on a {spec['background']} background"


def parse_caption(text):
    """The inverse of caption(): the scene description a prompt of the grammar names (without
    positions), or None when the text is not a sentence of the grammar."""
    words = text.strip().split()
    if len(words) < 7 or words[0] != "a" or words[-1] != "background" or words[-4:-2] != ["on",
                                                                                        "a"]:
        return None
    background, body = words[-2], words[1:-4]

    def obj(pair):
        if len(pair) != 2 or pair[0] not in COLOURS or pair[1] not in SHAPES:
            return None
        return {"colour": pair[0], "shape": pair[1]}

    if background not in COLOURS:
        return None
    if len(body) == 2:
        first = obj(body)
        return None if first is None else {"background": background, "objects": [first],
                                           "relation": None}
    for rel in RELATIONS:
        rw = rel.split()
        n = len(rw)
        if len(body) == 5 + n and body[2:2 + n] == rw and body[2 + n] == "a":
            first, second = obj(body[:2]), obj(body[3 + n:])
            if first and second:
                return {"background": background, "objects": [first, second], "relation": rel}
    return None


def _place_pair(rng, relation, r0, r1, size):
    """Centres of two shapes of half-extents r0, r1 that satisfy the relation with a clear
    margin: the separation along the relation's axis exceeds the other axis' offset."""
    for _ in range(1000):
        a = rng.uniform([r0 + 2, r0 + 2], [size - r0 - 2, size - r0 - 2])
        b = rng.uniform([r1 + 2, r1 + 2], [size - r1 - 2, size - r1 - 2])
        dx, dy = b[0] - a[0], b[1] - a[1]
        along, across = {"above": (dy, dx), "below": (-dy, dx), "left of": (dx, dy),
                         "right of": (-dx, dy)}[relation]
        if along >= r0 + r1 + 3 and abs(across) + 4 <= along:
            return a, b
    raise RuntimeError("could not place two shapes")  # unreachable for sane sizes


def sample_spec(rng, size):
    """A random scene: background colour, one or two objects with colours distinct from the
    background and from each other, their shapes, half-extents and centres (pixels)."""
    names = list(COLOURS)
    background = names[rng.integers(len(names))]
    n_obj = 1 + int(rng.integers(2))
    colours = [c for c in names if c != background]
    picks = rng.permutation(len(colours))[:n_obj]
    objs = []
    for k in range(n_obj):
        radius = float(rng.uniform(MIN_RADIUS, MAX_RADIUS) * size)
        objs.append({"colour": colours[picks[k]], "shape": SHAPES[rng.integers(len(SHAPES))],
                     "radius": radius})
    relation = None
    if n_obj == 1:
        r = objs[0]["radius"]
        objs[0]["centre"] = [float(v) for v in rng.uniform(r + 2, size - r - 2, size=2)]
    else:
        relation = RELATIONS[rng.integers(len(RELATIONS))]
        a, b = _place_pair(rng, relation, objs[0]["radius"], objs[1]["radius"], size)
        objs[0]["centre"], objs[1]["centre"] = [float(v) for v in a], [float(v) for v in b]
    return {"background": background, "objects": objs, "relation": relation}


def _draw_shape(draw, shape, cx, cy, r, colour):
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        h = 0.9 * r  # about the circle's area
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=colour)
    else:  # an upright triangle whose bounding box it fills half of
        draw.polygon([(cx, cy - 1.05 * r), (cx - 1.1 * r, cy + 0.85 * r),
                      (cx + 1.1 * r, cy + 0.85 * r)], fill=colour)


def render(spec, size):
    """The scene as an RGB uint8 array (size, size, 3)."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), COLOURS[spec["background"]])
    draw = ImageDraw.Draw(img)
    for o in spec["objects"]:
        cx, cy = (v * SUPERSAMPLE for v in o["centre"])
        _draw_shape(draw, o["shape"], cx, cy, o["radius"] * SUPERSAMPLE, COLOURS[o["colour"]])
    return np.asarray(img.resize((size, size), Image.BOX))


def scene(seed, index, size):
    """Scene number `index` of the set drawn from `seed`: (spec, caption, image)."""
    rng = np.random.default_rng([seed, index])
    spec = sample_spec(rng, size)
    return spec, caption(spec), render(spec, size)


def make_set(seed, count, size):
    """count scenes: (specs list, captions list, images uint8 array (count, size, size, 3))."""
    specs, captions = [], []
    images = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        spec, text, img = scene(seed, i, size)
        specs.append(spec)
        captions.append(text)
        images[i] = img
    return specs, captions, images
