"""Shared fixtures of the Python test suite.

The suite runs under .venv/bin/python (scripts/setup makes it) and drives the executables of one
build folder: SDXS_BUILD (default: build/) names it, so the same tests run against the
sanitizer build (build-asan/). Generated model folders and other data go to tests/data/, which
is not committed and is rebuilt whenever the script that made it changes.
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(1, ROOT)

# diffusers' attention on torch 1.13 can turn recycled memory into NaN scores (distill/torchfix.py
# says how); every reference below is computed with the guard in place.
from distill import torchfix  # noqa: E402

torchfix.install()

# Parity tests compare the CPU reference backend with diffusers (also on a machine with a GPU,
# where `auto` would pick CUDA); the GPU tests in tests/gpu/ pass --backend cuda themselves.
os.environ.setdefault("SDXS_BACKEND", "cpu")

BUILD = os.path.abspath(os.environ.get("SDXS_BUILD", os.path.join(ROOT, "build")))
DATA = os.path.join(ROOT, "tests", "data")


def exe(name):
    """Path of an executable of the build under test: 'sdxs' or a tests/tools program."""
    path = os.path.join(BUILD, name)
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: build first (see README)")
    return path


def run(args, check=True, timeout=600, **kw):
    """Runs a command, returning the CompletedProcess with text stdout/stderr."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout: {proc.stdout[-2000:]}\n"
                             f"stderr: {proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def data_dir():
    os.makedirs(DATA, exist_ok=True)
    return DATA
