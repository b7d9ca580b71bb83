#!/usr/bin/env python3
"""The obvious Python pipeline a store owner would write instead of Vitrine.

OpenCV reads each frame, onnxruntime runs the SSD, numpy decodes the anchors and runs NMS, every
garment crop goes through the embedder one at a time, hnswlib searches the catalog. Same models,
same frames, same score threshold and body layout as Vitrine's demo config (vitrine.toml), and the
models' documented pre-processing (Pillow bilinear resize, (x - mean) / std), so both find the same
shoppers and garments and can be compared side by side (scripts/compare-peer). Prints one JSON
object.
"""
import argparse
import glob
import json
import math
import os
import sys
import time
import tomllib

import cv2
import hnswlib
import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def anchors(a):
    n = a["num_layers"]
    scales = [a["min_scale"] + (a["max_scale"] - a["min_scale"]) * i / (n - 1) for i in range(n)] + [1.0]
    out = []
    for i, f in enumerate(a["feature_map_sizes"]):
        if i == 0 and a.get("reduce_boxes_in_lowest_layer", True):
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[i], r) for r in a["aspect_ratios"]]
            specs.append((math.sqrt(scales[i] * scales[i + 1]), a.get("interpolated_scale_aspect_ratio", 1.0)))
        for y in range(f):
            for x in range(f):
                for s, r in specs:
                    out.append(((y + 0.5) / f, (x + 0.5) / f, s / math.sqrt(r), s * math.sqrt(r)))
    return np.array(out, dtype=np.float32)


def nms(boxes, scores, thr):
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        yy1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        xx1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        yy2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        xx2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.maximum(0, yy2 - yy1) * np.maximum(0, xx2 - xx1)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
        iou = inter / np.maximum(area(boxes[i]) + area(boxes[order[1:]]) - inter, 1e-12)
        order = order[1:][iou <= thr]
    return keep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=os.path.join(ROOT, "vitrine.toml"))
    ap.add_argument("--catalog", help="catalog folder (items.jsonl with embeddings); default: the config's")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()

    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    base = os.path.dirname(os.path.abspath(args.config))
    det_cfg_path = os.path.join(base, cfg["detector"]["model"])
    with open(det_cfg_path, "rb") as f:
        dcfg = tomllib.load(f)
    emb_cfg_path = os.path.join(base, cfg["embedder"]["model"])
    with open(emb_cfg_path, "rb") as f:
        ecfg = tomllib.load(f)
    det = ort.InferenceSession(os.path.join(os.path.dirname(det_cfg_path), dcfg["file"]), providers=["CPUExecutionProvider"])
    emb = ort.InferenceSession(os.path.join(os.path.dirname(emb_cfg_path), ecfg["file"]), providers=["CPUExecutionProvider"])
    anc = anchors(dcfg["ssd"]["anchors"])
    labels = {}
    with open(os.path.join(os.path.dirname(det_cfg_path), dcfg["labels"])) as f:
        cur = None
        for line in f:
            line = line.strip()
            if line.startswith("id:"):
                cur = int(line.split(":")[1])
            elif line.startswith("name:") and cur is not None:
                labels[cur] = line.split(":", 1)[1].strip().strip("'\"")
    thr = cfg["detector"].get("score_threshold", 0.4)
    iou_thr = cfg["detector"].get("iou_threshold", 0.5)
    regions = cfg.get("regions", {})
    person = set(regions.get("person_labels", ["Person"]))
    label_groups = regions.get("label_groups", {})
    layout = regions.get("layout", [])
    min_h = regions.get("min_person_height", 40)
    top_k = cfg.get("recommend", {}).get("top_k", 6)

    # The catalog: one hnswlib index per group.
    cat_dir = args.catalog or os.path.join(base, cfg["catalog"]["path"])
    groups = {}
    with open(os.path.join(cat_dir, "items.jsonl")) as f:
        for line in f:
            it = json.loads(line)
            groups.setdefault(it["group"], []).append((it["id"], it["embedding"]))
    indexes = {}
    t = time.time()
    for g, items in groups.items():
        data = np.array([e for _, e in items], dtype=np.float32)
        idx = hnswlib.Index(space="ip", dim=data.shape[1])
        idx.init_index(max_elements=len(items), ef_construction=200, M=16)
        idx.add_items(data, np.arange(len(items)))
        idx.set_ef(64)
        indexes[g] = idx
    build_s = time.time() - t

    frames = sorted(glob.glob(os.path.join(base, cfg["camera"]["path"], "*.jpg")))
    din = dcfg["input"]
    ein = ecfg["input"]
    emean = np.array(ein["mean"], dtype=np.float32)
    estd = np.array(ein["std"], dtype=np.float32)
    sy, sx, sh, sw = dcfg["ssd"]["box_coder_scales"]
    times, crops_total, people_total, dets_per_frame = [], 0, 0, []
    wall0 = None
    cpu0 = None
    for i in range(args.warmup + args.frames):
        if i == args.warmup:
            wall0, cpu0 = time.perf_counter(), time.process_time()
        t0 = time.perf_counter()
        img = cv2.imread(frames[i % len(frames)])
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        x = np.asarray(Image.fromarray(rgb).resize((din["width"], din["height"]), Image.BILINEAR)).astype(np.float32)
        x = (x - np.array(din["mean"], np.float32)) / np.array(din["std"], np.float32)
        out = det.run([dcfg["ssd"]["box_encodings"], dcfg["ssd"]["class_scores"]], {din["name"]: x[None]})
        enc, logits = out[0][0], out[1][0]
        scores = 1.0 / (1.0 + np.exp(-logits))
        yc = enc[:, 0] / sy * anc[:, 2] + anc[:, 0]
        xc = enc[:, 1] / sx * anc[:, 3] + anc[:, 1]
        bh = np.exp(enc[:, 2] / sh) * anc[:, 2]
        bw = np.exp(enc[:, 3] / sw) * anc[:, 3]
        boxes = np.clip(np.stack([yc - bh / 2, xc - bw / 2, yc + bh / 2, xc + bw / 2], 1), 0, 1)
        dets = []
        for c in range(1, scores.shape[1]):
            m = scores[:, c] >= thr
            if not m.any():
                continue
            b, s = boxes[m], scores[m, c]
            for k in nms(b, s, iou_thr):
                y0, x0, y1, x1 = b[k]
                dets.append((labels.get(c, str(c)), float(s[k]), (x0 * w, y0 * h, x1 * w, y1 * h)))
        # Garment regions: body layout for people, footwear boxes as they are.
        regions_ = []
        for lab, s, (x0, y0, x1, y1) in dets:
            if lab in person and (y1 - y0) >= min_h:
                people_total += 1
                for band in layout:
                    bx = band.get("x", [0, 1])
                    regions_.append((band["group"], (x0 + bx[0] * (x1 - x0), y0 + band["y"][0] * (y1 - y0), x0 + bx[1] * (x1 - x0), y0 + band["y"][1] * (y1 - y0))))
            elif lab in label_groups:
                regions_.append((label_groups[lab], (x0, y0, x1, y1)))
        for group, (x0, y0, x1, y1) in regions_:
            crop = rgb[int(max(0, math.floor(y0))):int(min(h, math.ceil(y1))), int(max(0, math.floor(x0))):int(min(w, math.ceil(x1)))]
            if crop.size == 0:
                continue
            c = np.asarray(Image.fromarray(crop).resize((ein["width"], ein["height"]), Image.BILINEAR)).astype(np.float32)
            c = ((c - emean) / estd).transpose(2, 0, 1)[None]
            v = emb.run([ecfg["output"]["name"]], {ein["name"]: c})[0][0]
            crops_total += 1
            if group in indexes:
                indexes[group].knn_query(v[None], k=min(top_k, indexes[group].get_current_count()))
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            dets_per_frame.append(len(dets))
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    times.sort()
    n = len(times)
    print(json.dumps({
        "frames": n,
        "fps": n / wall,
        "p50_ms": times[n // 2] * 1e3,
        "p99_ms": times[min(n - 1, int(round((n - 1) * 0.99)))] * 1e3,
        "crops_per_frame": crops_total / (args.warmup + args.frames),
        "people_per_frame": people_total / (args.warmup + args.frames),
        "cpu_ms_per_frame": cpu * 1e3 / n,
        "catalog_items": sum(len(v) for v in groups.values()),
        "index_build_s": build_s,
        "detections_per_frame": dets_per_frame,
    }))


if __name__ == "__main__":
    sys.exit(main())
