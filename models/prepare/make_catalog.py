"""Catalog bundles (models/CONTRACTS.md section 7) from real Fashion-MNIST product images.

  make_catalog.py demo OUT_DIR   ~300 items: 10 classes x 10 source images x 3 colours (committed as catalog/demo)
  make_catalog.py full OUT_DIR   all 70,000 images (60,000 train + 10,000 test), one colour each (benchmarks;
                                 not committed, about 0.7 GB)

Each item image follows catalog_images.py (28x28 -> 224x224 LANCZOS, coloured, JPEG quality 90). The
vector of an item is the daemon's `[similarity]` recipe (src/vision/fusion.rs, colour_ref.py): the shipped
int8 embedder's embedding through onnxruntime, with the CONTRACTS.md pre-processing applied to the stored JPEG
as read back (the whole image is the crop), joined with the photo's colour descriptor (its non-white pixels)
at --colour-weight (0.65, the daemon's default; 0 = the embedding alone). The manifest's embedder.recipe names
the recipe, so a daemon configured otherwise refuses the catalog. Deterministic: the
selection, colours, names and prices come from fixed seeds; `created` is SOURCE_DATE_EPOCH when set.
Needs numpy, Pillow, onnxruntime (models/prepare/requirements-ort.txt)."""
import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog_images as ci  # noqa: E402
import colour_ref as cr  # noqa: E402
import vitrine_ref as vr  # noqa: E402

NOUN = {"T-shirt/top": "T-shirt", "Trouser": "trousers", "Pullover": "pullover", "Dress": "dress",
        "Coat": "coat", "Sandal": "sandals", "Shirt": "shirt", "Sneaker": "sneakers", "Bag": "bag",
        "Ankle boot": "ankle boots"}
STYLE = ["Classic", "Relaxed", "Everyday", "Essential", "Studio", "Weekend", "City", "Heritage", "Modern",
         "Soft"]
BASE_PRICE = {"T-shirt/top": 19.0, "Trouser": 49.0, "Pullover": 39.0, "Dress": 59.0, "Coat": 119.0,
              "Sandal": 35.0, "Shirt": 34.0, "Sneaker": 69.0, "Bag": 45.0, "Ankle boot": 89.0}
EMBEDDER_TOML = vr.REPO / "models" / "efficientnet_lite0_int8.toml"


def created() -> str:
    t = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(t), dt.timezone.utc) if t else dt.datetime.now(dt.timezone.utc)
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def plan_demo():
    """(split, index, colour name, style no.) for the demo: per class 10 train images drawn with a fixed
    seed, each in 3 different colours drawn with a fixed seed."""
    imgs, labels = ci.load_split("train")
    rng = np.random.default_rng(20240611)
    names = list(ci.PALETTE)
    plan = []
    for c in range(10):
        idx = np.sort(rng.choice(np.nonzero(labels == c)[0], size=10, replace=False))
        for s, i in enumerate(idx):
            for col in rng.choice(len(names), size=3, replace=False):
                plan.append(("train", int(i), names[col], s))
    return plan


def plan_full():
    rng = np.random.default_rng(70000)
    names = list(ci.PALETTE)
    plan = []
    for split, n in (("train", 60000), ("t10k", 10000)):
        cols = rng.integers(0, len(names), size=n)
        styles = rng.integers(0, len(STYLE), size=n)
        plan += [(split, i, names[cols[i]], int(styles[i])) for i in range(n)]
    return plan


def build(mode: str, out: Path, batch: int = 32, limit: int | None = None, colour_weight: float = 0.65):
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    data = {s: ci.load_split(s) for s in ("train", "t10k")}
    plan = plan_demo() if mode == "demo" else plan_full()
    if limit:
        plan = plan[:limit]  # for trying the script quickly; the manifest counts what was written
    prefix = "fm" if mode == "demo" else "fmx"
    width = 4 if mode == "demo" else 5
    emb = vr.Embedder(EMBEDDER_TOML)
    emb_sha = hashlib.sha256((EMBEDDER_TOML.parent / emb.cfg["file"]).read_bytes()).hexdigest()
    t0 = time.time()
    with open(out / "items.jsonl", "w") as fh:
        for start in range(0, len(plan), batch):
            chunk = plan[start:start + batch]
            items, stored = [], []
            for k, (split, i, colour, style) in enumerate(chunk, start=start + 1):
                img28 = data[split][0][i]
                cls = ci.CLASSES[int(data[split][1][i])]
                item_id = f"{prefix}-{k:0{width}d}"
                rel = f"images/{item_id}.jpg"
                (out / rel).write_bytes(ci.jpeg_bytes(ci.item_image(img28, ci.PALETTE[colour])))
                stored.append(vr.open_rgb(out / rel))
                price = BASE_PRICE[cls] + 5.0 * (style % 4) + (0.95 if style % 2 else 0.0)
                r, g, b = ci.PALETTE[colour]
                items.append({
                    "id": item_id,
                    "name": f"{STYLE[style]} {colour} {NOUN[cls]}",
                    "group": ci.GROUP[cls], "category": cls, "price": round(price, 2), "currency": "EUR",
                    "image": rel,
                    "attributes": {"colour": colour, "colour_rgb": f"#{r:02x}{g:02x}{b:02x}",
                                   "source": f"fashion-mnist {'train' if split == 'train' else 'test'} #{i}",
                                   "recipe": "fm28-lanczos224-tint-jpeg90"},
                })
            vecs = emb.embed_images(stored, batch=batch)
            for it, v, im in zip(items, vecs, stored):
                v = np.asarray(v, np.float32) / np.float32(np.linalg.norm(v))
                if colour_weight > 0:
                    desc = cr.descriptor(cr.garment_pixels(np.asarray(im), background=(255, 255, 255)))
                    v = cr.fuse(v, desc, colour_weight)
                it["embedding"] = [round(float(x), 7) for x in v]
                fh.write(json.dumps(it) + "\n")
            if (start // batch) % 50 == 0:
                print(f"  {start + len(chunk)}/{len(plan)} ({time.time() - t0:.0f} s)", flush=True)
    manifest = {"format": "vitrine-catalog/1", "version": "demo-1" if mode == "demo" else "full-1",
                "created": created(), "item_count": len(plan),
                "embedder": {"sha256": emb_sha,
                             "dim": int(emb.cfg["output"]["dim"]) + (cr.DIM if colour_weight > 0 else 0),
                             "recipe": cr.describe(colour_weight)},
                "embeddings": "inline"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{mode}: {len(plan)} items in {out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["demo", "full"])
    ap.add_argument("out")
    ap.add_argument("--limit", type=int, help="only the first N items (a quick trial)")
    ap.add_argument("--colour-weight", type=float, default=0.65,
                    help="the daemon's similarity.colour_weight (0: the CNN embedding alone)")
    a = ap.parse_args()
    build(a.mode, Path(a.out), limit=a.limit, colour_weight=a.colour_weight)
