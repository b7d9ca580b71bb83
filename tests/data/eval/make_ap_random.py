"""Writes ap_random_{gt,pred}.jsonl and ap_random_expected.json for tests/eval_ap.rs.

An independent NumPy implementation of the TF Object Detection API's PascalBoxes metric, written
from its documented behaviour (per-image greedy matching by argmax IoU in descending score order,
precision/recall from a reversed argsort, the VOC-style envelope), run over a seeded random
dataset with no tied scores (ties are order-dependent in the reference; see src/eval/ap.rs).

Usage: python3 make_ap_random.py   (needs numpy; seed fixed, output deterministic)
"""
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LABELS = ["Dress", "Shirt", "Skirt", "Coat"]
rng = np.random.default_rng(20240607)


def iou(a, b):
    """a: [N,4], b: [M,4] as xmin, ymin, xmax, ymax; continuous, no +1."""
    ix = np.maximum(0, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]))
    iy = np.maximum(0, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]))
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def tp_fp(gt, det_boxes, det_scores, thr):
    order = np.argsort(det_scores)[::-1]
    det_boxes, det_scores = det_boxes[order], det_scores[order]
    labels = np.zeros(len(det_scores), dtype=bool)
    if len(gt) and len(det_boxes):
        o = iou(det_boxes, gt)
        best = np.argmax(o, axis=1)
        taken = np.zeros(len(gt), dtype=bool)
        for i in range(len(det_boxes)):
            g = best[i]
            if o[i, g] >= thr and not taken[g]:
                labels[i] = True
                taken[g] = True
    return det_scores, labels


def ap(scores, labels, num_gt):
    if num_gt == 0:
        return None
    if len(scores) == 0:
        return 0.0
    order = np.argsort(scores)[::-1]
    tp = labels[order].astype(float)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    precision = ctp / (ctp + cfp)
    recall = ctp / num_gt
    r = np.concatenate([[0], recall, [1]])
    p = np.concatenate([[0], precision, [0]])
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    idx = np.where(r[1:] != r[:-1])[0] + 1
    return float(np.sum((r[idx] - r[idx - 1]) * p[idx]))


def rand_box(w, h):
    x0, y0 = rng.uniform(0, w - 40), rng.uniform(0, h - 40)
    return [round(x0, 2), round(y0, 2), round(x0 + rng.uniform(20, w - x0), 2), round(y0 + rng.uniform(20, h - y0), 2)]


def jitter(b, s):
    x0, y0, x1, y1 = [round(v + rng.normal(0, s), 2) for v in b]
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


gt_lines, pred_lines = [], []
used_scores = set()
for n in range(40):
    w, h = 320, 240
    gt = [(LABELS[rng.integers(0, 3)], rand_box(w, h)) for _ in range(rng.integers(0, 4))]
    pred = []
    for label, b in gt:
        for _ in range(rng.integers(0, 3)):  # 0, 1 or 2 detections (duplicates) per object
            pred.append((label if rng.random() < 0.85 else LABELS[rng.integers(0, 4)], jitter(b, rng.uniform(1, 12))))
    for _ in range(rng.integers(0, 3)):  # background false positives, Coat included (no gt)
        pred.append((LABELS[rng.integers(0, 4)], rand_box(w, h)))
    scored = []
    for label, b in pred:
        s = round(float(rng.uniform(0.01, 1.0)), 6)
        while s in used_scores:
            s = round(float(rng.uniform(0.01, 1.0)), 6)
        used_scores.add(s)
        scored.append((label, s, b))
    name = f"img_{n:03d}.jpg"
    gt_lines.append({"image": name, "width": w, "height": h,
                     "boxes": [{"label": l, "bbox": b} for l, b in gt]})
    pred_lines.append({"image": name, "width": w, "height": h,
                       "boxes": [{"label": l, "score": s, "bbox": b} for l, s, b in scored]})

expected = {}
for thr in (0.5, 0.75):
    per = {}
    for label in LABELS:
        scores, labels, num_gt = [], [], 0
        for g, p in zip(gt_lines, pred_lines):
            gb = np.array([x["bbox"] for x in g["boxes"] if x["label"] == label], dtype=float).reshape(-1, 4)
            pb = np.array([x["bbox"] for x in p["boxes"] if x["label"] == label], dtype=float).reshape(-1, 4)
            ps = np.array([x["score"] for x in p["boxes"] if x["label"] == label], dtype=float)
            num_gt += len(gb)
            s, l = tp_fp(gb, pb, ps, thr)
            scores.extend(s)
            labels.extend(l)
        per[label] = ap(np.array(scores), np.array(labels, dtype=bool), num_gt)
    valid = [v for v in per.values() if v is not None]
    expected[str(thr)] = {"per_category": per, "mAP": sum(valid) / len(valid)}

with open(os.path.join(HERE, "ap_random_gt.jsonl"), "w") as f:
    f.writelines(json.dumps(x) + "\n" for x in gt_lines)
with open(os.path.join(HERE, "ap_random_pred.jsonl"), "w") as f:
    f.writelines(json.dumps(x) + "\n" for x in pred_lines)
with open(os.path.join(HERE, "ap_random_expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
    f.write("\n")
print(json.dumps(expected, indent=1))
