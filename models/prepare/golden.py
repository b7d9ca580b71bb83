"""Golden references for the Rust tests (models/CONTRACTS.md section 6), computed with onnxruntime in Python
and the reference pre/post-processing in vitrine_ref.py.

Writes tests/data/golden/detector_<config stem>.json for every shipped detector and
tests/data/golden/embedder.json for the int8 embedder, and tests/data/golden/colour.json (colour descriptors,
colour_ref.py; `golden.py colour` writes only that one). Run from anywhere (paths are resolved against the
repository root); needs numpy, Pillow, onnxruntime.

Notes for the tests that read these files:
- JPEG inputs (messi5.jpg, person.jpg, grace_hopper.jpg, the demo frames) decode to slightly different pixels
  in different JPEG decoders; PNG inputs (basketball1.png, astronaut.png) decode identically. Compare boxes
  by matching (same class, IoU >= 0.9) with a small score tolerance rather than bit-exactly, and expect a
  detection whose score lies within the tolerance of the threshold to appear or vanish.
- tf-od-api: the graph does its own NMS; detections are those among the first num_detections with
  score >= score_threshold, ordered as section 4.5 (score desc, class id asc, output index asc).
"""
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import colour_ref as cr  # noqa: E402
import vitrine_ref as vr  # noqa: E402

REPO = vr.REPO
OUT = REPO / "tests/data/golden"
PARAMS = {"score_threshold": 0.3, "iou_threshold": 0.5, "max_detections": 100, "resize": "stretch"}
IMAGES = [
    "models/demo/stills/messi5.jpg",
    "models/demo/stills/basketball1.png",
    "models/demo/stills/person.jpg",
    "models/demo/stills/grace_hopper.jpg",
    "models/demo/stills/astronaut.png",
    "models/demo/frames/vtest_0000.jpg",
    "models/demo/frames/vtest_0050.jpg",
    "models/demo/frames/vtest_0099.jpg",
]
DETECTORS = ["ssd_mobilenetv2_oidv4_fp32", "ssd_mobilenetv2_oidv4_int8", "ssdlite_pedestrian_tfod"]
EMBEDDER = "efficientnet_lite0_int8"


def rel(p: Path) -> str:
    return str(Path(p).resolve().relative_to(REPO))


def detector_goldens():
    results = {}
    for name in DETECTORS:
        toml = REPO / "models" / f"{name}.toml"
        det = vr.Detector(toml)
        images = []
        for im_path in IMAGES:
            img = vr.open_rgb(REPO / im_path)
            boxes = det.detect(img, PARAMS["score_threshold"], PARAMS["iou_threshold"],
                               PARAMS["max_detections"], PARAMS["resize"])
            if det.contract == "tf-od-api":
                boxes = [b for _, b in sorted(enumerate(boxes), key=lambda kb: (-kb[1]["score"],
                                                                                 kb[1]["class_id"], kb[0]))]
            images.append({"image": im_path, "width": img.size[0], "height": img.size[1], "boxes": boxes})
        doc = {"model_config": rel(toml), "params": PARAMS, "images": images}
        (OUT / f"detector_{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
        results[name] = images
        print(f"detector_{name}.json:", [len(i["boxes"]) for i in images], "boxes per image")
    return results


def embedder_golden(det_results):
    """~8 crops: person boxes of the fp32 detector on demo frames (whole, upper and lower body), person boxes
    on stills, and two whole images."""
    fp32 = {i["image"]: i["boxes"] for i in det_results["ssd_mobilenetv2_oidv4_fp32"]}
    chosen = []

    def persons(image, n):
        return [b["bbox"] for b in fp32[image] if b["label"] == "Person"][:n]

    for image, n in [("models/demo/frames/vtest_0000.jpg", 2), ("models/demo/frames/vtest_0050.jpg", 1),
                     ("models/demo/stills/person.jpg", 1), ("models/demo/stills/messi5.jpg", 1)]:
        for b in persons(image, n):
            chosen.append((image, b))
    # upper and lower body of the first demo-frame person (the daemon's body-layout garment crops)
    x0, y0, x1, y1 = chosen[0][1]
    h = y1 - y0
    chosen.append((chosen[0][0], [x0, y0 + 0.15 * h, x1, y0 + 0.55 * h]))
    chosen.append((chosen[0][0], [x0, y0 + 0.5 * h, x1, y1]))
    for image in ["models/demo/stills/grace_hopper.jpg", "models/demo/stills/astronaut.png"]:
        w, hh = vr.open_rgb(REPO / image).size
        chosen.append((image, [0, 0, w, hh]))
    toml = REPO / "models" / f"{EMBEDDER}.toml"
    emb = vr.Embedder(toml)
    crops = []
    for image, box in chosen:
        img = vr.open_rgb(REPO / image)
        b = vr.crop_box(img, box)
        if b is None:
            continue
        e = emb.embed_crop(img, b)
        crops.append({"image": image, "bbox": b, "embedding": [float(v) for v in e]})
    doc = {"model_config": rel(toml), "crops": crops}
    (OUT / "embedder.json").write_text(json.dumps(doc) + "\n")
    print("embedder.json:", len(crops), "crops")


def ellipse_mask(w: int, h: int) -> np.ndarray:
    """A person-mask stand-in over a crop: the ellipse inscribed in it (255 inside)."""
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - (w - 1) / 2) / (w / 2)) ** 2 + ((yy - (h - 1) / 2) / (h / 2)) ** 2 <= 1.0
    return np.where(inside, 255, 0).astype(np.uint8)


def mask_runs(mask: np.ndarray):
    """Per row, [start, end) runs of 255: compact and exact."""
    rows = []
    for r in mask:
        d = np.diff(np.concatenate([[0], (r > 127).astype(np.int8), [0]]))
        rows.append([[int(a), int(b)] for a, b in zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0])])
    return rows


def colour_golden():
    """Colour descriptors (colour_ref.py = src/vision/colour.rs): catalog photos by their non-white pixels,
    garment crops of demo frames and stills with an elliptic mask and without (central half), and the fusion
    of a fixed embedding. PNG stills and the catalog's 4:4:4 JPEGs."""
    cases = []
    for item in ["fm-0001", "fm-0042", "fm-0107", "fm-0230", "fm-0299"]:
        cases.append(("catalog/demo/images/%s.jpg" % item, None, "background"))
    crops = [("models/demo/frames/vtest_0000.jpg", [300, 120, 60, 110]),
             ("models/demo/frames/vtest_0050.jpg", [100, 200, 45, 80]),
             ("models/demo/stills/astronaut.png", [150, 180, 260, 330]),
             ("models/demo/stills/basketball1.png", [200, 100, 120, 200])]
    for image, rect in crops:
        cases.append((image, rect, "mask"))
        cases.append((image, rect, "central"))
    out = []
    for image, rect, sel in cases:
        arr = np.asarray(vr.open_rgb(REPO / image))
        doc = {"image": image, "selection": sel}
        if sel == "background":
            px = cr.garment_pixels(arr, background=(255, 255, 255), background_delta_e=12.0)
            doc.update(background=[255, 255, 255], background_delta_e=12.0)
        else:
            doc["rect"] = rect
            mask = None
            if sel == "mask":
                mask = ellipse_mask(rect[2], rect[3])
                doc["mask_runs"] = mask_runs(mask)
            px = cr.garment_pixels(arr, tuple(rect), mask=mask)
        doc.update(pixels=len(px), median_lab=[float(v) for v in cr.median_lab(px)],
                   descriptor=[float(v) for v in cr.descriptor(px)])
        out.append(doc)
    rng = np.random.default_rng(10)
    e = rng.standard_normal(256).astype(np.float32)
    e /= np.linalg.norm(e)
    fusion = {"weight": 0.5, "embedding": [float(v) for v in e], "descriptor": out[0]["descriptor"],
              "fused": [float(v) for v in cr.fuse(e, np.array(out[0]["descriptor"]), 0.5)],
              "recipe": cr.describe(0.5)}
    doc = {"descriptor": cr.DESCRIPTOR, "dim": cr.DIM, "cases": out, "fusion": fusion}
    (OUT / "colour.json").write_text(json.dumps(doc) + "\n")
    print("colour.json:", len(out), "cases")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    if sys.argv[1:] == ["colour"]:
        colour_golden()
        sys.exit(0)
    res = detector_goldens()
    if (REPO / "models" / f"{EMBEDDER}.toml").exists():
        embedder_golden(res)
    colour_golden()
