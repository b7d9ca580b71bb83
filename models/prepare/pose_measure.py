"""Pose model figures for MODEL_CARD.md, measured with onnxruntime in Python.

  pose_measure.py --work models/prepare/.work --out pose_measure.json [--skip-latency]

Crops: every Person box (>= 0.4) of the shipped int8 detector on every 2nd of the 100 demo frames (held
out from the int8 calibration) and the 5 stills, cut by the pose crop rule (CONTRACTS.md 8.2).
Reference: the fp32 full model. Each other variant (fp32 lite; int8 static QDQ of full and lite from
quantize_pose.py, where built) is compared with it:
- keypoint distance in frame px, over the keypoints the reference sees (visibility and presence >= 0.5), for
  all 33 and for the 8 garment-region joints (shoulders, hips, knees, ankles), also in % of the box height;
- visibility gate agreement: same side of 0.5 for the 8 garment-region joints;
- |confidence difference|, and agreement of confidence >= 0.5;
- person-mask IoU at 0.5 on the 256 x 256 grid (same crop).
Latency: batch 1 per crop, 1 and 2 intra-op threads (CPU time of the process and wall clock), and batch 3
at 2 threads per crop."""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import vitrine_ref as vr  # noqa: E402

M = vr.REPO / "models"
FRAMES = sorted((M / "demo/frames").glob("vtest_*.jpg"))[::2]
STILLS = sorted((M / "demo/stills").glob("*"))
GARMENT_JOINTS = [11, 12, 23, 24, 25, 26, 27, 28]


def collect_crops():
    det = vr.Detector(M / "ssd_mobilenetv2_oidv4_int8.toml")
    out = {"demo_frames": [], "stills": []}
    for kind, paths in (("demo_frames", FRAMES), ("stills", STILLS)):
        for p in paths:
            img = vr.open_rgb(p)
            for d in det.detect(img, score_threshold=0.4):
                if d["label"] == "Person":
                    c, sq = vr.pose_crop(img, d["bbox"])
                    out[kind].append((vr.pose_tensor(c)[0], sq, d["bbox"][3] - d["bbox"][1]))
    return out


def session(path, threads=None):
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_all(path, crops):
    s = session(path)
    x = np.stack([c[0] for c in crops])
    outs = [s.run(["Identity", "Identity_1", "Identity_2"], {"input_1": x[i:i + 8]}) for i in range(0, len(x), 8)]
    lm, conf, mask = (np.concatenate(v) for v in zip(*outs))
    return [vr.pose_decode(lm[i], conf[i], mask[i], crops[i][1]) for i in range(len(crops))]


def pct(v, q):
    return float(np.percentile(v, q)) if len(v) else None


def compare(ref, oth, crops):
    d_all, d_gar, d_rel, vis_agree, conf_d, conf_agree, ious = [], [], [], [], [], [], []
    for r, o, c in zip(ref, oth, crops):
        seen = (r["visibility"] >= 0.5) & (r["presence"] >= 0.5)
        dist = np.hypot(o["x"] - r["x"], o["y"] - r["y"])
        d_all += dist[seen].tolist()
        g = [k for k in GARMENT_JOINTS if seen[k]]
        d_gar += dist[g].tolist()
        d_rel += (100 * dist[g] / c[2]).tolist()
        vis_agree += ((r["visibility"][GARMENT_JOINTS] >= 0.5) == (o["visibility"][GARMENT_JOINTS] >= 0.5)).tolist()
        conf_d.append(abs(r["confidence"] - o["confidence"]))
        conf_agree.append((r["confidence"] >= 0.5) == (o["confidence"] >= 0.5))
        a, b = r["mask"] > 0.5, o["mask"] > 0.5
        u = (a | b).sum()
        ious.append(float((a & b).sum() / u) if u else 1.0)
    return {
        "persons": len(crops),
        "keypoints_px_all33": {"median": pct(d_all, 50), "p95": pct(d_all, 95), "max": max(d_all, default=None)},
        "keypoints_px_garment_joints": {"median": pct(d_gar, 50), "p95": pct(d_gar, 95),
                                        "max": max(d_gar, default=None)},
        "keypoints_pct_of_box_height_garment_joints": {"median": pct(d_rel, 50), "p95": pct(d_rel, 95)},
        "visibility_gate_agreement_garment_joints": float(np.mean(vis_agree)),
        "confidence_absdiff": {"mean": float(np.mean(conf_d)), "max": float(np.max(conf_d))},
        "confidence_gate_agreement": float(np.mean(conf_agree)),
        "mask_iou": {"mean": float(np.mean(ious)), "p5": pct(ious, 5), "min": float(np.min(ious))},
    }


def latency(path, x, threads, batch=1, runs=40):
    s = session(path, threads)
    xb = np.ascontiguousarray(np.repeat(x[None], batch, axis=0))
    for _ in range(5):
        s.run(None, {"input_1": xb})
    cpu, wall = [], []
    for _ in range(runs):
        c, w = time.process_time(), time.perf_counter()
        s.run(None, {"input_1": xb})
        cpu.append((time.process_time() - c) * 1e3 / batch)
        wall.append((time.perf_counter() - w) * 1e3 / batch)
    return {"cpu_ms_median": float(np.median(cpu)), "wall_ms_median": float(np.median(wall)),
            "wall_ms_min": float(np.min(wall))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    B = args.work / "build"
    variants = {"full_fp32": M / "pose_landmark_full.onnx", "lite_fp32": B / "pose_landmark_lite.onnx"}
    for v in ("full", "lite"):
        if (B / f"pose_{v}_int8_static.onnx").exists():
            variants[f"{v}_int8"] = B / f"pose_{v}_int8_static.onnx"
    crops = collect_crops()
    res = {"onnxruntime": ort.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "crops": {k: len(v) for k, v in crops.items()}, "agreement_with_full_fp32": {}}
    for kind, cs in crops.items():
        ref = run_all(variants["full_fp32"], cs)
        for name, path in variants.items():
            if name != "full_fp32":
                res["agreement_with_full_fp32"].setdefault(name, {})[kind] = compare(ref, run_all(path, cs), cs)
        print(kind, "done", flush=True)
    if not args.skip_latency:
        x = crops["demo_frames"][0][0]
        res["load_average_before_latency"] = os.getloadavg()
        lat = {}
        for name, path in variants.items():
            lat[name] = {"1_thread": latency(path, x, 1), "2_threads": latency(path, x, 2),
                         "2_threads_batch3_per_crop": latency(path, x, 2, batch=3, runs=20)}
            print(name, json.dumps(lat[name]), flush=True)
        res["latency_batch1_per_crop"] = lat
        res["load_average_after_latency"] = os.getloadavg()
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res["agreement_with_full_fp32"], indent=1))


if __name__ == "__main__":
    main()
