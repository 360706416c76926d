"""Captioned image sources for the stages. A source hands out batches as a dict:
  pixels    (B, 3, H, W) float in [-1, 1]
  captions  list of B strings
  control   (B, 3, H, W) float in [0, 1], Canny edges of the pixels (on request)
  latents   (B, C, h, w) U-Net latents, when the source has them cached
InMemoryData holds a generated set (the toy run); FolderData reads an image folder with a
metadata.jsonl of {"file_name", "text"} lines, the layout of the usual text-to-image sets, for
full-scale runs.
"""
import json
import os

import numpy as np
import torch

from distill.components import canny_controls


class InMemoryData:
    """images uint8 (N, H, W, 3), captions (N strings); latents and edges are added once known."""

    def __init__(self, images, captions):
        self.images = images
        self.captions = list(captions)
        self.latents = None  # (N, C, h, w) float, set by cache_latents
        self.edges = None    # (N, H, W) uint8, computed on first use

    def __len__(self):
        return len(self.captions)

    def cache_latents(self, encode, batch=256):
        """Runs encode(pixels) over the whole set once (the toy run's frozen encoder)."""
        out = []
        for i in range(0, len(self), batch):
            out.append(encode(self._pixels(np.arange(i, min(len(self), i + batch)))))
        self.latents = torch.cat(out)

    def _pixels(self, idx):
        x = torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1

    def get(self, idx, control=False, device="cpu"):
        idx = np.asarray(idx)
        b = {"pixels": self._pixels(idx).to(device), "captions": [self.captions[i] for i in idx]}
        if self.latents is not None:
            b["latents"] = self.latents[torch.as_tensor(idx)].to(device)
        if control:
            if self.edges is None:
                self.edges = (canny_controls(self.images)[:, 0] * 255).to(torch.uint8)
            b["control"] = self.edges[torch.as_tensor(idx)].float().div(255)[:, None] \
                .expand(-1, 3, -1, -1).contiguous().to(device)
        return b


class FolderData:
    """An image folder with metadata.jsonl; images are centre-cropped and resized to `size`."""

    def __init__(self, root, size, max_items=None):
        self.root, self.size = root, size
        with open(os.path.join(root, "metadata.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        self.rows = rows[:max_items] if max_items else rows
        self.latents = None

    def __len__(self):
        return len(self.rows)

    def _load(self, i):
        from PIL import Image
        img = Image.open(os.path.join(self.root, self.rows[i]["file_name"])).convert("RGB")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        return np.asarray(img.resize((self.size, self.size), Image.BICUBIC))

    def get(self, idx, control=False, device="cpu"):
        imgs = np.stack([self._load(int(i)) for i in idx])
        b = {"pixels": (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1)
             .to(device), "captions": [self.rows[int(i)]["text"] for i in idx]}
        if control:
            b["control"] = canny_controls(imgs).to(device)
        return b
