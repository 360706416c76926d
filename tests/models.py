"""Model folders for the tests, built once per session by tests/ref/make_models.py into
tests/data/models/ (rebuilt when that script or the configurations change), plus helpers to run
the diffusers reference on them."""
import os
import shutil

from conftest import DATA

MODELS = os.path.join(DATA, "models")


def model_dir(name):
    """Builds (if needed) and returns the folder of a test model: 'tiny-dreamshaper',
    'tiny-09', 'dreamshaper' or 'sdxs09'."""
    from ref.make_models import build
    os.makedirs(MODELS, exist_ok=True)
    return build(MODELS, name)


def slow(*values):
    """A pytest parameter that uses a full-size model (marked slow)."""
    import pytest
    return pytest.param(*values, marks=pytest.mark.slow)


def copy_model(name, dst, drop=()):
    """Copies a test model to dst, without the files in drop (paths relative to the model
    folder). Weight files are hard links to the originals: replace, never edit them in place.
    Returns dst."""
    src = model_dir(name)
    if os.path.exists(dst):
        shutil.rmtree(dst)

    def link_weights(s, d):
        if s.endswith(".safetensors"):
            os.link(s, d)
        else:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link_weights)
    for rel in drop:
        os.remove(os.path.join(dst, rel))
    return dst


def rel_l2(a, b):
    """||a - b|| / ||b|| in float64."""
    import numpy as np
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def cached(key, compute):
    """compute() -> dict of numpy arrays, stored under tests/data/refcache by key (a string that
    must name everything the result depends on; the model folder's stamp is added when key
    names a model folder). Lets the sanitizer run reuse the reference outputs of the first run."""
    import hashlib

    import numpy as np
    os.makedirs(os.path.join(DATA, "refcache"), exist_ok=True)
    h = hashlib.sha256(key.encode())
    for part in key.split("|"):
        stamp = os.path.join(part, ".stamp")
        if os.path.isfile(stamp):
            with open(stamp, "rb") as f:
                h.update(f.read())
    path = os.path.join(DATA, "refcache", h.hexdigest()[:32] + ".npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    result = compute()
    np.savez(path + ".tmp.npz", **result)
    os.replace(path + ".tmp.npz", path)
    return result
