"""Checks a converted pose landmark model against the original TFLite model, and its batch axis.

  check_pose.py crops OUT.npz                       (onnxruntime env) real person crops, CONTRACTS.md 8.2
  check_pose.py tflite MODEL.tflite CROPS.npz OUT.npz   (TensorFlow env) the TFLite outputs of those crops
  check_pose.py compare MODEL.onnx CROPS.npz TFLITE.npz (onnxruntime env) parity and batch-3 == 3 x batch-1

The crops are the person boxes (score >= 0.4) of the shipped int8 detector on five demo frames and the
stills, cut and resized by the pose crop rule. Two processes because the TensorFlow environment has no
onnxruntime. Exit status 1 when a check fails: landmarks x/y within 1e-2 crop px, visibility/presence
logits within 1e-2, confidence within 1e-3, mask probabilities within 1e-2 and the mask > 0.5 decision
equal on >= 99.99 % of pixels (mask logits reach -400 where fp32 sums differ by a few units: compared as
probabilities); batch 3 equal to three single runs within 1e-4 (landmarks) / 1e-3 (mask logits)."""
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import vitrine_ref as vr  # noqa: E402

NAMES = ["Identity", "Identity_1", "Identity_2"]
IMAGES = ["models/demo/frames/vtest_0000.jpg", "models/demo/frames/vtest_0025.jpg",
          "models/demo/frames/vtest_0050.jpg", "models/demo/frames/vtest_0075.jpg",
          "models/demo/frames/vtest_0099.jpg"] + [
    f"models/demo/stills/{n}" for n in ("messi5.jpg", "basketball1.png", "person.jpg", "grace_hopper.jpg",
                                        "astronaut.png")]


def crops(out):
    det = vr.Detector(vr.REPO / "models/ssd_mobilenetv2_oidv4_int8.toml")
    xs, meta = [], []
    for p in IMAGES:
        img = vr.open_rgb(vr.REPO / p)
        for d in det.detect(img, score_threshold=0.4):
            if d["label"] == "Person":
                c, sq = vr.pose_crop(img, d["bbox"])
                xs.append(vr.pose_tensor(c)[0])
                meta.append({"image": p, "box": d["bbox"], "crop": sq})
    np.savez(out, x=np.stack(xs), meta=json.dumps(meta))
    print(f"{len(xs)} person crops from {len(IMAGES)} images")


def tflite(model, crops_npz, out):
    import tensorflow as tf

    it = tf.lite.Interpreter(model_path=model)
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    outs = {o["name"]: o["index"] for o in it.get_output_details()}
    res = {n: [] for n in NAMES}
    for x in np.load(crops_npz)["x"]:
        it.set_tensor(inp, x[None])
        it.invoke()
        for n in NAMES:
            res[n].append(it.get_tensor(outs[n])[0])
    np.savez(out, **{n: np.stack(v) for n, v in res.items()})


def compare(model, crops_npz, tfl_npz):
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.load(crops_npz)["x"]
    t = np.load(tfl_npz)
    single = [np.concatenate(v) for v in zip(*[sess.run(NAMES, {"input_1": x[i:i + 1]}) for i in range(len(x))])]
    lm_t, lm_o = t["Identity"].reshape(len(x), -1, 5), single[0].reshape(len(x), -1, 5)
    d = {
        "landmark_xy_crop_px": float(np.abs(lm_t[:, :33, :2] - lm_o[:, :33, :2]).max()),
        "visibility_presence_logit": float(np.abs(lm_t[:, :33, 3:] - lm_o[:, :33, 3:]).max()),
        "confidence": float(np.abs(t["Identity_1"] - single[1]).max()),
        "mask_probability": float(np.abs(vr.sigmoid32(t["Identity_2"]) - vr.sigmoid32(single[2])).max()),
        "mask_gt_0_5_agreement": float(((t["Identity_2"] > 0) == (single[2] > 0)).mean()),
    }
    ok = (d["landmark_xy_crop_px"] < 1e-2 and d["visibility_presence_logit"] < 1e-2 and d["confidence"] < 1e-3
          and d["mask_probability"] < 1e-2 and d["mask_gt_0_5_agreement"] >= 0.9999)
    b = {"landmarks": 0.0, "confidence": 0.0, "mask_logit": 0.0}
    for i in range(0, len(x) - 2, 3):
        r = sess.run(NAMES, {"input_1": x[i:i + 3]})
        assert r[0].shape == (3, 195) and r[1].shape == (3, 1) and r[2].shape == (3, 256, 256, 1)
        b["landmarks"] = max(b["landmarks"], float(np.abs(r[0] - single[0][i:i + 3]).max()))
        b["confidence"] = max(b["confidence"], float(np.abs(r[1] - single[1][i:i + 3]).max()))
        b["mask_logit"] = max(b["mask_logit"], float(np.abs(r[2] - single[2][i:i + 3]).max()))
    ok = ok and b["landmarks"] < 1e-4 and b["confidence"] < 1e-4 and b["mask_logit"] < 1e-3
    print(json.dumps({"model": Path(model).name, "crops": len(x), "max_abs_tflite_vs_onnx": d,
                      "max_abs_batch3_vs_single": b, "ok": ok}))
    return ok


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "crops":
        crops(sys.argv[2])
    elif cmd == "tflite":
        tflite(*sys.argv[2:5])
    elif cmd == "compare":
        sys.exit(0 if compare(*sys.argv[2:5]) else 1)
    else:
        raise SystemExit(__doc__)
