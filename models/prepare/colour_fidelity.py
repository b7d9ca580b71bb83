"""Quick colour-fidelity measurement of the fusion weight, until `vitrine eval relevance` exists.

For each demo frame: the shipped int8 detector's people (score >= 0.4), cut into the daemon's fixed body
layout (vitrine.toml [regions.layout]: top y 0.16-0.52 x 0.12-0.88, bottom y 0.50-0.90 x 0.18-0.82); each
garment crop is embedded, fused with its colour descriptor (central half, no mask) at weight w, and searched
exactly (cosine) among the catalog items of its group. Garment colour = median Lab of the crop's central half;
item colour = median Lab of its photo's non-background pixels (colour_ref.garment_pixels). Reports the mean
CIE76 dE garment -> top item, -> the whole top-6 list, -> a random item of the group (expected value) and ->
the closest item of the group (oracle), and fidelity = (random - shown) / (random - oracle). No tracker: every
frame's garments count once (the daemon smooths over frames, which this leaves out).

  colour_fidelity.py [--weights 0,0.25,0.5,0.75] [--frames N]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import colour_ref as cr  # noqa: E402
import vitrine_ref as vr  # noqa: E402

REPO = vr.REPO
LAYOUT = {"top": ((0.12, 0.88), (0.16, 0.52)), "bottom": ((0.18, 0.82), (0.50, 0.90))}
TOP_K = 6


def catalog(path: Path, emb: "vr.Embedder"):
    import json

    items = [json.loads(line) for line in (path / "items.jsonl").read_text().splitlines() if line.strip()]
    imgs = [vr.open_rgb(path / it["image"]) for it in items]
    embs = emb.embed_images(imgs)
    embs /= np.linalg.norm(embs, axis=1, keepdims=True)
    arrs = [np.asarray(im) for im in imgs]
    desc = np.stack([cr.descriptor(cr.garment_pixels(a, background=(255, 255, 255))) for a in arrs])
    med = np.stack([cr.median_lab(cr.garment_pixels(a, background=(255, 255, 255))) for a in arrs])
    groups = np.array([it["group"] for it in items])
    return items, embs, desc, med, groups


def garments(det, emb, frames):
    out = []  # (group, embedding, descriptor, median Lab)
    for f in frames:
        img = vr.open_rgb(f)
        arr = np.asarray(img)
        for d in det.detect(img, 0.4, 0.5, 50):
            if d["label"] != "Person":
                continue
            x0, y0, x1, y1 = d["bbox"]
            w, h = x1 - x0, y1 - y0
            if h < 40:
                continue
            for g, ((fx0, fx1), (fy0, fy1)) in LAYOUT.items():
                b = vr.crop_box(img, [x0 + fx0 * w, y0 + fy0 * h, x0 + fx1 * w, y0 + fy1 * h])
                if b is None:
                    continue
                rect = (b[0], b[1], b[2] - b[0], b[3] - b[1])
                e = emb.embed_crop(img, b)
                px = cr.garment_pixels(arr, rect)
                out.append((g, e / np.linalg.norm(e), cr.descriptor(px), cr.median_lab(px)))
    return out


def measure(gs, cat, w):
    _, embs, desc, med, groups = cat
    top, lst, rnd, orc = [], [], [], []
    for g, e, d, m in gs:
        sel = np.nonzero(groups == g)[0]
        sim = (1 - w) * embs[sel] @ e + w * desc[sel] @ d
        order = sel[np.argsort(-sim, kind="stable")[:TOP_K]]
        de = np.sqrt(((med[sel] - m) ** 2).sum(1))
        de_of = dict(zip(sel, de))
        top.append(de_of[order[0]])
        lst.append(np.mean([de_of[i] for i in order]))
        rnd.append(de.mean())
        orc.append(de.min())
    top, lst, rnd, orc = map(np.mean, (top, lst, rnd, orc))
    return dict(w=w, top=top, list=lst, random=rnd, oracle=orc, fid_top=(rnd - top) / (rnd - orc),
                fid_list=(rnd - lst) / (rnd - orc))


def retrieval(cat, emb, weights, street: Path):
    """Style proxy: each catalog photo's garment (alpha from its distance to white), scaled to 160 px, darkened
    to 75 %, pasted onto a street patch of the first demo frame; the whole 200x200 patch is the query crop.
    Share of items found among the top 6 of their group."""
    from PIL import Image

    items, embs, desc, _, groups = cat
    bg = np.asarray(vr.open_rgb(street).resize((400, 400)))[100:300, 100:300].astype(np.float32)
    crops, ds = [], []
    for it in items:
        a = np.asarray(vr.open_rgb(Path(cat_path) / it["image"]).resize((160, 160), Image.BILINEAR), np.float32)
        alpha = np.clip((255.0 - a.min(axis=2)) / 64.0, 0, 1)[:, :, None]
        patch = bg.copy()
        patch[20:180, 20:180] = patch[20:180, 20:180] * (1 - alpha) + 0.75 * a * alpha
        arr = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
        crops.append(Image.fromarray(arr))
        ds.append(cr.descriptor(cr.garment_pixels(arr)))
    q = emb.embed_images(crops)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for w in weights:
        hits = 0
        for i, it in enumerate(items):
            sel = np.nonzero(groups == it["group"])[0]
            sim = (1 - w) * embs[sel] @ q[i] + w * desc[sel] @ ds[i]
            hits += i in set(sel[np.argsort(-sim, kind="stable")[:TOP_K]])
        print(f"  retrieval proxy w={w}: {hits}/{len(items)} = {hits / len(items):.2f} in the top {TOP_K}")


cat_path = str(REPO / "catalog/demo")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="0,0.25,0.5,0.75,0.9")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--catalog", default=str(REPO / "catalog/demo"))
    ap.add_argument("--retrieval", action="store_true", help="also the pasted-photo retrieval proxy")
    a = ap.parse_args()
    global cat_path
    cat_path = a.catalog
    det = vr.Detector(REPO / "models/ssd_mobilenetv2_oidv4_int8.toml")
    emb = vr.Embedder(REPO / "models/efficientnet_lite0_int8.toml")
    frames = sorted((REPO / "models/demo/frames").glob("*.jpg"))[: a.frames]
    cat = catalog(Path(a.catalog), emb)
    weights = [float(x) for x in a.weights.split(",")]
    if a.retrieval:
        retrieval(cat, emb, weights, frames[0])
    gs = garments(det, emb, frames)
    print(f"{len(frames)} frames, {len(gs)} garments "
          f"({sum(g == 'top' for g, *_ in gs)} top, {sum(g == 'bottom' for g, *_ in gs)} bottom)")
    print("  w     dE top  dE list  dE random  dE oracle  fidelity top  fidelity list")
    for w in weights:
        r = measure(gs, cat, w)
        print(f"  {w:<5} {r['top']:6.1f}  {r['list']:7.1f}  {r['random']:9.1f}  {r['oracle']:9.1f}  "
              f"{r['fid_top']:12.2f}  {r['fid_list']:13.2f}")


if __name__ == "__main__":
    main()
