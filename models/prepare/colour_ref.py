"""Reference colour descriptor and fusion, exactly as src/vision/colour.rs and src/vision/fusion.rs compute
them (numpy, float64). Used by make_catalog.py (catalog vectors) and golden.py (tests/data/golden/colour.json,
read by tests/colour_golden.rs, tolerance 1e-4).

Descriptor `lab-soft-hist/1`: sRGB -> CIELAB (D65); the garment's pixels (person mask > 127; for product
photos those farther than background_delta_e (CIE76) from the background colour; otherwise, or when fewer than
MIN_PIXELS are selected, the central half of the crop) sampled on a stride grid of at most 64 per side; each
pixel spreads unit weight over a 4 x 6 x 6 Lab grid with a separable Gaussian kernel; the histogram is
L2-normalised. Fusion: [sqrt(1-w) * embedding, sqrt(w) * descriptor], L2-normalised."""

from __future__ import annotations

import math

import numpy as np

DESCRIPTOR = "lab-soft-hist/1"
L_CENTRES = np.array([12.5, 37.5, 62.5, 87.5])
L_SIGMA = 25.0
AB_CENTRES = np.array([-75.0, -45.0, -15.0, 15.0, 45.0, 75.0])
AB_SIGMA = 20.0
DIM = len(L_CENTRES) * len(AB_CENTRES) ** 2
SAMPLES_PER_SIDE = 64
MIN_PIXELS = 8
M = np.array([[0.4124564, 0.3575761, 0.1804375],
              [0.2126729, 0.7151522, 0.0721750],
              [0.0193339, 0.1191920, 0.9503041]])
WHITE = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> float64 Lab [..., 3]."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.stack([lin[..., 0] * M[i, 0] + lin[..., 1] * M[i, 1] + lin[..., 2] * M[i, 2] for i in range(3)],
                   axis=-1) / WHITE
    d = 6.0 / 29.0
    f = np.where(xyz > d ** 3, np.cbrt(xyz), xyz / (3 * d * d) + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])],
                    axis=-1)


def stride(w: int, h: int) -> int:
    return max(1, -(-max(w, h) // SAMPLES_PER_SIDE))


def garment_pixels(img: np.ndarray, rect=None, mask: np.ndarray | None = None, background=None,
                   background_delta_e: float = 12.0) -> np.ndarray:
    """img uint8 [H, W, 3]; rect (x, y, w, h) clamped to the image; mask uint8 [h, w] of the crop (255 =
    shopper) or background RGB for a product photo; neither: the central half. -> Lab [N, 3]."""
    H, W = img.shape[:2]
    x, y, w, h = rect if rect is not None else (0, 0, W, H)
    x, y = min(x, W), min(y, H)
    w, h = min(w, W - x), min(h, H - y)
    if w == 0 or h == 0:
        return np.zeros((0, 3))
    crop = img[y:y + h, x:x + w]
    s = stride(w, h)
    out = np.zeros((0, 3))
    if mask is not None and mask.shape == (h, w):
        keep = mask[::s, ::s] > 127
        out = srgb_to_lab(crop[::s, ::s][keep])
    elif background is not None:
        lab = srgb_to_lab(crop[::s, ::s]).reshape(-1, 3)
        bg = srgb_to_lab(np.array(background, dtype=np.uint8))
        out = lab[np.sqrt(((lab - bg) ** 2).sum(-1)) > background_delta_e]
    if len(out) < MIN_PIXELS:
        cx, cw = w // 4, max(1, w // 2)
        cy, ch = h // 4, max(1, h // 2)
        out = srgb_to_lab(crop[cy:cy + ch:s, cx:cx + cw:s]).reshape(-1, 3)
    return out


def _kernel(v: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    k = np.exp(-(v[:, None] - centres[None, :]) ** 2 / (2.0 * sigma * sigma))
    return k / k.sum(1, keepdims=True)


def descriptor(lab: np.ndarray) -> np.ndarray:
    """Lab [N, 3] -> float64 [DIM], L2-normalised (zeros for no pixels). Bins: L outermost, then a, then b."""
    if len(lab) == 0:
        return np.zeros(DIM)
    kl = _kernel(lab[:, 0], L_CENTRES, L_SIGMA)
    ka = _kernel(lab[:, 1], AB_CENTRES, AB_SIGMA)
    kb = _kernel(lab[:, 2], AB_CENTRES, AB_SIGMA)
    hist = np.einsum("ni,nj,nk->ijk", kl, ka, kb).reshape(-1)
    n = np.sqrt((hist ** 2).sum())
    return hist / n if n > 0 else hist


def median_lab(lab: np.ndarray) -> np.ndarray:
    return np.median(lab, axis=0)


def fuse(embedding: np.ndarray, desc: np.ndarray, weight: float) -> np.ndarray:
    """Both parts f32 like the Rust side, so the stored vectors match it to float rounding."""
    we = np.float32(math.sqrt(1.0 - weight))
    wc = np.float32(math.sqrt(weight))
    v = np.concatenate([np.asarray(embedding, np.float32) * we, np.asarray(desc, np.float32) * wc])
    n = np.float32(np.sqrt((v.astype(np.float64) ** 2).sum()))
    return v / n if n > 0 else v


def describe(weight: float, background=(255, 255, 255), background_delta_e: float = 12.0) -> str:
    """The recipe text of src/vision/fusion.rs (Recipe::describe) for colour on."""
    if weight <= 0:
        return "cnn"
    r, g, b = background
    de = f"{background_delta_e:g}" if background_delta_e != int(background_delta_e) else str(int(background_delta_e))
    return (f"cnn*{math.sqrt(1.0 - weight):.4f}+{DESCRIPTOR}*{math.sqrt(weight):.4f};"
            f"photo-pixels=not-background(#{r:02x}{g:02x}{b:02x},dE>{de})")
