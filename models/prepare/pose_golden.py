"""Golden references for the pose model (models/CONTRACTS.md section 8), computed with onnxruntime in Python
and the reference crop rule and decoding in vitrine_ref.py. Run by prepare.sh's goldens step.

Writes tests/data/golden/pose_<variant>.json for every shipped models/pose_landmark_<variant>.toml:

  {"model_config": "models/pose_landmark_full.toml",
   "boxes_from": {"model_config": "models/ssd_mobilenetv2_oidv4_int8.toml", "label": "Person",
                  "score_threshold": 0.4, "iou_threshold": 0.5, "resize": "stretch"},
   "mask_threshold": 0.5,
   "images": [{"image": "models/demo/frames/vtest_0000.jpg", "width": 768, "height": 576,
     "persons": [{
       "box": [xmin, ymin, xmax, ymax],        # frame px, f32 values: feed them to the crop rule as they are
       "crop": {"x0": -12, "y0": 40, "s": 231},  # CONTRACTS.md 8.2
       "input_mean": 0.41,                     # mean of the [256, 256, 3] input tensor (checks crop + resize)
       "confidence": 0.99,                     # Identity_1
       "keypoints": [[x, y, visibility, presence], ... 33],  # frame px; sigmoid of the logits
       "mask": {"grid32": [[...32] x 32],      # sigmoid probabilities, 8x8-cell area means, row major
                "count_gt_0_5": 5120},         # 256x256 probabilities > 0.5
       "box_mask": {"rect": [x, y, w, h],      # the person box as an integer rect (CONTRACTS.md 5)
                    "count": 2400}             # pixels set (255) by the mask -> frame rule at mask_threshold
     }]}]}

Each person is run on its own (batch 1), default session options. Boxes are the shipped detector's Person
boxes rounded to f32, so the Rust test needs no detector: it reads the boxes from the file."""
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import vitrine_ref as vr  # noqa: E402

REPO = vr.REPO
OUT = REPO / "tests/data/golden"
IMAGES = [
    "models/demo/frames/vtest_0000.jpg",
    "models/demo/frames/vtest_0050.jpg",
    "models/demo/frames/vtest_0099.jpg",
    "models/demo/stills/person.jpg",
    "models/demo/stills/astronaut.png",
    "models/demo/stills/basketball1.png",
]
BOXES_FROM = {"model_config": "models/ssd_mobilenetv2_oidv4_int8.toml", "label": "Person",
              "score_threshold": 0.4, "iou_threshold": 0.5, "resize": "stretch"}
MASK_THRESHOLD = 0.5


def person_boxes(det, img):
    b = BOXES_FROM
    dets = det.detect(img, b["score_threshold"], b["iou_threshold"], 100, b["resize"])
    return [[float(np.float32(v)) for v in d["bbox"]] for d in dets if d["label"] == b["label"]]


def person_record(img, box, p):
    x0, y0, s = p["crop"]
    crop_img, _ = vr.pose_crop(img, box)
    ib = vr.crop_box(img, box)
    rect = [ib[0], ib[1], ib[2] - ib[0], ib[3] - ib[1]]
    gm = vr.garment_mask(p["mask"], p["crop"], rect, MASK_THRESHOLD)
    digest = vr.mask_digest(p["mask"])
    digest["grid32"] = [[round(v, 6) for v in row] for row in digest["grid32"]]
    return {
        "box": box,
        "crop": {"x0": x0, "y0": y0, "s": s},
        "input_mean": float(vr.pose_tensor(crop_img).astype(np.float64).mean()),
        "confidence": p["confidence"],
        "keypoints": [[float(p["x"][k]), float(p["y"][k]), float(p["visibility"][k]), float(p["presence"][k])]
                      for k in range(vr.POSE_KEYPOINTS)],
        "mask": digest,
        "box_mask": {"rect": rect, "count": int((gm == 255).sum())},
    }


def main():
    det = vr.Detector(REPO / BOXES_FROM["model_config"])
    boxes = {}
    for im in IMAGES:
        boxes[im] = person_boxes(det, vr.open_rgb(REPO / im))
    OUT.mkdir(parents=True, exist_ok=True)
    for toml in sorted((REPO / "models").glob("pose_landmark_*.toml")):
        variant = toml.stem.removeprefix("pose_landmark_")
        pose = vr.Pose(toml)
        images = []
        for im in IMAGES:
            img = vr.open_rgb(REPO / im)
            persons = pose.persons(img, boxes[im])
            images.append({"image": im, "width": img.size[0], "height": img.size[1],
                           "persons": [person_record(img, b, p) for b, p in zip(boxes[im], persons)]})
        doc = {"model_config": str(toml.relative_to(REPO)), "boxes_from": BOXES_FROM,
               "mask_threshold": MASK_THRESHOLD, "images": images}
        (OUT / f"pose_{variant}.json").write_text(json.dumps(doc) + "\n")
        print(f"pose_{variant}.json:", [len(i["persons"]) for i in images], "persons per image")


if __name__ == "__main__":
    main()
