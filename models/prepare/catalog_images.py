"""Fashion-MNIST reading and the catalog-item image recipe shared by the embedder preparation (PCA fit,
quantization calibration) and the catalog scripts. Documented in catalog/README.md.

Recipe for one item: a 28x28 greyscale Fashion-MNIST image (garment bright on black, value v) is upscaled
to 224x224 with Pillow's LANCZOS filter, then coloured: a = v/255 is taken as the garment's coverage and
each pixel becomes white * (1 - a) + colour * a (background white, garment in the colour, Fashion-MNIST
shading kept as lighter/darker shades). The result is saved as JPEG quality 90 (4:4:4)."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

# Debian's dataset-fashion-mnist package; FASHION_MNIST_DIR points elsewhere (e.g. the package unpacked with
# `dpkg -x` where it cannot be installed).
FM_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
GROUP = {"T-shirt/top": "top", "Pullover": "top", "Shirt": "top", "Coat": "top", "Trouser": "bottom",
         "Dress": "full-body", "Sandal": "footwear", "Sneaker": "footwear", "Ankle boot": "footwear",
         "Bag": "bag"}
# name -> RGB. Every colour is dark or saturated enough to stand out on a white background.
PALETTE = {
    "black": (25, 25, 28), "charcoal": (70, 72, 78), "navy": (28, 42, 96), "royal blue": (40, 80, 190),
    "sky blue": (95, 160, 220), "teal": (20, 120, 125), "forest green": (34, 100, 52),
    "olive": (110, 112, 40), "mustard": (212, 160, 30), "orange": (230, 110, 30), "red": (196, 30, 40),
    "burgundy": (110, 22, 45), "pink": (225, 105, 150), "purple": (100, 50, 140), "brown": (110, 70, 40),
    "camel": (190, 145, 95),
}
SIZE = 224
JPEG_QUALITY = 90


def load_split(split: str):
    """split 'train' (60,000) or 't10k' (10,000) -> (images uint8 [N,28,28], labels uint8 [N])."""
    with gzip.open(FM_DIR / f"{split}-images-idx3-ubyte.gz") as f:
        imgs = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FM_DIR / f"{split}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    assert len(imgs) == len(labels)
    return imgs, labels


def item_image(img28: np.ndarray, colour) -> Image.Image:
    """The recipe above, up to (not including) the JPEG encoding."""
    up = Image.fromarray(img28, mode="L").resize((SIZE, SIZE), Image.LANCZOS)
    a = np.asarray(up, dtype=np.float32)[:, :, None] / 255.0
    c = np.asarray(colour, dtype=np.float32)[None, None, :]
    rgb = 255.0 * (1.0 - a) + c * a
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mode="RGB")


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=True)
    return buf.getvalue()


def item_image_as_stored(img28: np.ndarray, colour) -> Image.Image:
    """What a reader of the stored JPEG gets back (for embedding without writing files)."""
    return Image.open(io.BytesIO(jpeg_bytes(item_image(img28, colour)))).convert("RGB")
