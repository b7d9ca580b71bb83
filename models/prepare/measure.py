"""Figures for MODEL_CARD.md, measured with onnxruntime in Python on the shipped files.

  measure.py --work models/prepare/.work --out measure.json [--skip-latency]

1. int8 vs fp32 detector on the 100 demo frames (never used for calibration) and the stills: detections
   matched greedily (same class, IoU >= 0.5, by fp32 score), counts and score / IoU differences.
2. Persons found on a sample of demo frames against a hand count (HAND_COUNT below, counted by eye).
3. Embedder int8 vs fp32 cosine on held-out real crops (Fashion-MNIST test items, person crops of the demo
   frames, body-layout halves of those, the stills).
4. How well the 256-d PCA keeps the 1280-d cosine top-10 neighbours: Fashion-MNIST test set (10,000 items
   never used to fit the PCA) and the demo catalog.
5. Single-image latency (batch 1) per model, onnxruntime CPU, 1 and 2 intra-op threads.
"""
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog_images as ci  # noqa: E402
import vitrine_ref as vr  # noqa: E402

REPO = vr.REPO
LOAD0 = None  # load average when the latency measurement starts
M = REPO / "models"
FRAMES = sorted((M / "demo/frames").glob("vtest_*.jpg"))
STILLS = sorted((M / "demo/stills").glob("*"))

# Persons visible in demo frames, counted by eye on the JPEGs (each person once, including one partly
# hidden behind another in vtest_0099). All are between about 45 px (far path) and 190 px (near lawn) tall.
HAND_COUNT = {
    "vtest_0000.jpg": 6, "vtest_0020.jpg": 6, "vtest_0040.jpg": 6,
    "vtest_0060.jpg": 6, "vtest_0080.jpg": 6, "vtest_0099.jpg": 7,
}


def match(a, b, thr=0.5):
    """Greedy matching of detections a (reference) to b: same class, IoU >= thr, in a's order."""
    used, pairs = set(), []
    for i, da in enumerate(a):
        best, bj = thr, None
        for j, db in enumerate(b):
            if j in used or db["class_id"] != da["class_id"]:
                continue
            x = pix_iou(da["bbox"], db["bbox"])
            if x >= best:
                best, bj = x, j
        if bj is not None:
            used.add(bj)
            pairs.append((i, bj, best))
    return pairs


def pix_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


def detector_agreement(res):
    fp32 = vr.Detector(M / "ssd_mobilenetv2_oidv4_fp32.toml")
    int8 = vr.Detector(M / "ssd_mobilenetv2_oidv4_int8.toml")
    out = {}
    for label, paths in (("demo_frames", FRAMES), ("stills", STILLS)):
        for thr in (0.3, 0.5):
            n32 = n8 = nm = 0
            ds, ious = [], []
            for p in paths:
                img = vr.open_rgb(p)
                a = fp32.detect(img, score_threshold=thr)
                # look for int8 partners at a lower threshold so a score just under thr still pairs up
                b_all = int8.detect(img, score_threshold=max(0.05, thr - 0.1))
                b = [d for d in b_all if d["score"] >= thr]
                pairs = match(a, b_all)
                n32 += len(a)
                n8 += len(b)
                nm += sum(1 for i, j, _ in pairs if b_all[j]["score"] >= thr)
                ds += [abs(a[i]["score"] - b_all[j]["score"]) for i, j, _ in pairs]
                ious += [x for _, _, x in pairs]
            out[f"{label}@{thr}"] = {
                "images": len(paths), "fp32_detections": n32, "int8_detections": n8,
                "matched_both_above_threshold": nm,
                "fp32_with_int8_partner(IoU>=0.5,int8 score>=thr-0.1)": len(ds),
                "score_absdiff_mean": float(np.mean(ds)) if ds else None,
                "score_absdiff_max": float(np.max(ds)) if ds else None,
                "matched_iou_mean": float(np.mean(ious)) if ious else None,
                "matched_iou_min": float(np.min(ious)) if ious else None,
            }
    res["detector_int8_vs_fp32"] = out


def person_counts(res):
    dets = {n: vr.Detector(M / f"{n}.toml") for n in
            ("ssd_mobilenetv2_oidv4_fp32", "ssd_mobilenetv2_oidv4_int8", "ssdlite_pedestrian_tfod")}
    rows = {}
    for name, hand in HAND_COUNT.items():
        img = vr.open_rgb(M / "demo/frames" / name)
        row = {"hand": hand}
        for n, d in dets.items():
            r = d.detect(img, score_threshold=0.2)
            for thr in (0.3, 0.4, 0.5):
                row[f"{n}@{thr}"] = sum(1 for x in r if x["label"] == "Person" and x["score"] >= thr)
        rows[name] = row
    res["persons_vs_hand_count"] = rows
    if all(v is not None for v in HAND_COUNT.values()):
        tot = {}
        for k in next(iter(rows.values())):
            tot[k] = sum(r[k] for r in rows.values())
        res["persons_vs_hand_count_total"] = tot


def embedder_agreement(res, work: Path):
    fp32_path = work / "build/efficientnet_lite0_fp32.onnx"
    e8 = vr.Embedder(M / "efficientnet_lite0_int8.toml")
    s32 = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    imgs, kinds = [], []
    te, tl = ci.load_split("t10k")
    rng = np.random.default_rng(5)
    cols = list(ci.PALETTE.values())
    for i in rng.choice(len(te), 600, replace=False):
        imgs.append(ci.item_image_as_stored(te[i], cols[rng.integers(len(cols))]))
        kinds.append("fashion-mnist test item")
    det = vr.Detector(M / "ssd_mobilenetv2_oidv4_fp32.toml")
    for p in FRAMES[::5]:
        img = vr.open_rgb(p)
        for d in det.detect(img, score_threshold=0.4):
            if d["label"] != "Person":
                continue
            x0, y0, x1, y1 = d["bbox"]
            h = y1 - y0
            for box, kind in (([x0, y0, x1, y1], "demo-frame person"),
                              ([x0, y0 + 0.15 * h, x1, y0 + 0.55 * h], "demo-frame upper body"),
                              ([x0, y0 + 0.5 * h, x1, y1], "demo-frame lower body")):
                b = vr.crop_box(img, box)
                if b:
                    imgs.append(img.crop(tuple(b)))
                    kinds.append(kind)
    for p in STILLS:
        imgs.append(vr.open_rgb(p))
        kinds.append("still (whole image)")
    a8 = e8.embed_images(imgs)
    x = np.concatenate([e8.tensor(im) for im in imgs])
    a32 = np.concatenate([s32.run(None, {"image": x[i:i + 32]})[0] for i in range(0, len(x), 32)])
    cos = (a8 * a32).sum(1)
    per = {}
    for k in sorted(set(kinds)):
        c = cos[[i for i, kk in enumerate(kinds) if kk == k]]
        per[k] = {"n": int(len(c)), "mean": float(c.mean()), "min": float(c.min())}
    res["embedder_int8_vs_fp32_cosine"] = {"n": int(len(cos)), "mean": float(cos.mean()),
                                           "p5": float(np.percentile(cos, 5)), "min": float(cos.min()),
                                           "by_kind": per}
    # does int8 keep fp32's top-10 neighbours among these crops?
    res["embedder_int8_vs_fp32_top10_overlap"] = topk_overlap(a32, a8, 10)


def topk(v, k):
    s = v @ v.T
    np.fill_diagonal(s, -np.inf)
    return np.argpartition(-s, k, axis=1)[:, :k]


def topk_overlap(ref, other, k):
    a = topk(ref / np.linalg.norm(ref, axis=1, keepdims=True), k)
    b = topk(other / np.linalg.norm(other, axis=1, keepdims=True), k)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def pca_preservation(res, work: Path):
    h = np.load(work / "emb/heldout_fm_test.npz")
    pca = np.load(work / "emb/pca.npz")
    f1280 = h["feat1280"].astype(np.float64)
    out = {"fashion_mnist_test_10000 (PCA-256 fp32 vs 1280-d fp32 cosine)": topk_overlap(f1280, h["emb256"], 10),
           # the reference that matches the graph's metric: cosine of mean-centred 1280-d features
           "fashion_mnist_test_10000 (PCA-256 fp32 vs 1280-d mean-centred cosine)":
               topk_overlap(f1280 - pca["mean"], h["emb256"], 10),
           "fashion_mnist_test_10000 (1280-d mean-centred vs 1280-d cosine)":
               topk_overlap(f1280, f1280 - pca["mean"], 10),
           # alternative not shipped: the same components applied without subtracting the mean
           "fashion_mnist_test_10000 (alt: uncentred projection vs 1280-d cosine)":
               topk_overlap(f1280, f1280 @ pca["comps"].T, 10)}
    lab = h["labels"]
    for tag, v in (("1280-d cosine", f1280), ("PCA-256 embedding", h["emb256"])):
        out[f"fashion_mnist_test_10000 same-class@10 ({tag})"] = float(np.mean(lab[topk(v / np.linalg.norm(
            v, axis=1, keepdims=True), 10)] == lab[:, None]))
    # demo catalog: 1280-d fp32 features vs the catalog's int8 PCA-256 embeddings (what the daemon searches)
    items = [json.loads(l) for l in open(REPO / "catalog/demo/items.jsonl")]
    fs = ort.InferenceSession(str(work / "emb/features_fp32.onnx"), providers=["CPUExecutionProvider"])
    e8 = vr.Embedder(M / "efficientnet_lite0_int8.toml")
    x = np.concatenate([e8.tensor(vr.open_rgb(REPO / "catalog/demo" / it["image"])) for it in items])
    f = np.concatenate([fs.run(None, {"image": x[i:i + 32]})[0] for i in range(0, len(x), 32)])
    emb = np.asarray([it["embedding"] for it in items], dtype=np.float32)
    out[f"demo_catalog_{len(items)} (int8 PCA-256 vs 1280-d fp32)"] = topk_overlap(f, emb, 10)
    z = (f.astype(np.float64) - pca["mean"]) @ pca["comps"].T
    out[f"demo_catalog_{len(items)} (fp32 PCA-256 vs 1280-d fp32)"] = topk_overlap(f, z, 10)
    out["pca_explained_variance_256"] = float(pca["explained"])
    out["pca_fit_vectors"] = {"fashion_mnist_train": int(pca["n_fm"]), "vtest_person_crops": int(pca["n_person"])}
    # same category / group among the top-10 of the int8 embedding (demo catalog)
    nn = topk(emb, 10)
    cat = np.asarray([it["category"] for it in items])
    col = np.asarray([it["attributes"]["colour"] for it in items])
    out["demo_catalog_top10_same_category"] = float(np.mean(cat[nn] == cat[:, None]))
    out["demo_catalog_top10_same_colour"] = float(np.mean(col[nn] == col[:, None]))
    out["demo_catalog_top10_same_category_and_colour"] = float(
        np.mean((cat[nn] == cat[:, None]) & (col[nn] == col[:, None])))
    src = np.asarray([it["attributes"]["source"] for it in items])
    out["demo_catalog_top10_holds_both_other_colour_variants"] = float(
        np.mean((src[nn] == src[:, None]).sum(1) == 2))
    nn1 = topk(emb, 1)[:, 0]
    out["demo_catalog_nearest_is_a_colour_variant_of_the_same_image"] = float(np.mean(src[nn1] == src))
    res["pca_top10_preservation"] = out


def latency(res, work: Path):
    models = {
        "ssd_mobilenetv2_oidv4_fp32.onnx": (M / "ssd_mobilenetv2_oidv4_fp32.onnx", (1, 300, 300, 3), np.float32),
        "ssd_mobilenetv2_oidv4_int8.onnx": (M / "ssd_mobilenetv2_oidv4_int8.onnx", (1, 300, 300, 3), np.float32),
        "ssdlite_pedestrian_tfod.onnx": (M / "ssdlite_pedestrian_tfod.onnx", (1, 300, 300, 3), np.uint8),
        "efficientnet_lite0_int8.onnx": (M / "efficientnet_lite0_int8.onnx", (1, 3, 224, 224), np.float32),
        "efficientnet_lite0_fp32.onnx (not shipped)": (work / "build/efficientnet_lite0_fp32.onnx",
                                                       (1, 3, 224, 224), np.float32),
    }
    global LOAD0
    LOAD0 = list(__import__("os").getloadavg())
    img = vr.open_rgb(FRAMES[0])
    out = {}
    for name, (path, shape, dt) in models.items():
        if shape[-1] == 3:
            a = np.asarray(img.resize((shape[2], shape[1]), vr.Image.BILINEAR))[None]
            x = a.astype(np.uint8) if dt == np.uint8 else ((a.astype(np.float32) - 127.5) / 127.5)
        else:
            a = np.asarray(img.crop((300, 150, 420, 400)).resize((224, 224), vr.Image.BILINEAR), dtype=np.float32)
            x = ((a - 127.0) / 128.0).transpose(2, 0, 1)[None]
        row = {}
        for threads in (1, 2):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            feed = {s.get_inputs()[0].name: np.ascontiguousarray(x)}
            for _ in range(10):
                s.run(None, feed)
            ts, cs = [], []
            for _ in range(60):
                t, c = time.perf_counter(), time.thread_time()
                s.run(None, feed)
                ts.append((time.perf_counter() - t) * 1000)
                cs.append((time.thread_time() - c) * 1000)
            row[f"{threads}_thread_ms"] = {"median": round(statistics.median(ts), 2), "min": round(min(ts), 2)}
            if threads == 1:
                # CPU time of the calling thread (the only one computing with 1 intra-op thread): close to the
                # latency on an idle core even while other jobs share the machine
                row["1_thread_cpu_ms_median"] = round(statistics.median(cs), 2)
        out[name] = row
    # embedder throughput at batch 32 (catalog indexing)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(str(M / "efficientnet_lite0_int8.onnx"), so, providers=["CPUExecutionProvider"])
    xb = np.repeat(x, 32, axis=0)
    s.run(None, {"image": xb})
    t = time.perf_counter()
    for _ in range(5):
        s.run(None, {"image": xb})
    out["efficientnet_lite0_int8.onnx batch-32 images/s (2 threads)"] = round(160 / (time.perf_counter() - t), 1)
    res["latency"] = out
    res["machine"] = {"loadavg_at_start_of_latency": LOAD0, "cpu_count": __import__("os").cpu_count(),
                      "processor": platform.processor(),
                      "onnxruntime": ort.__version__, "python": platform.python_version(),
                      "loadavg_at_end": list(__import__("os").getloadavg())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    work = Path(a.work)
    res = json.loads(Path(a.out).read_text()) if Path(a.out).exists() and a.only else {}
    parts = {"detector": lambda: detector_agreement(res), "persons": lambda: person_counts(res),
             "embedder": lambda: embedder_agreement(res, work), "pca": lambda: pca_preservation(res, work),
             "latency": lambda: latency(res, work)}
    for k, f in parts.items():
        if a.only and k not in a.only:
            continue
        t = time.time()
        f()
        print(f"{k}: {time.time() - t:.0f} s", flush=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
