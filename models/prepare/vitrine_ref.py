"""Reference pre/post-processing for Vitrine models, exactly as models/CONTRACTS.md specifies.

Used by golden.py and pose_golden.py (golden files for the Rust tests), make_catalog.py (catalog
embeddings), measure.py and pose_measure.py (model-card figures), check_pose.py and quantize_pose.py. Needs
numpy, Pillow and (for running models) onnxruntime.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- configs and label maps
def load_toml(path: Path) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def load_labels(path: Path) -> dict[int, str]:
    """TF OD API pbtxt (id + name or display_name) or plain text (line k is id k)."""
    text = Path(path).read_text()
    if "item" in text and "{" in text:
        import re

        out = {}
        for block in re.findall(r"item\s*\{(.*?)\}", text, flags=re.S):
            mid = re.search(r"\bid\s*:\s*(\d+)", block)
            mname = re.search(r"\b(?:display_name|name)\s*:\s*['\"](.*?)['\"]", block)
            out[int(mid.group(1))] = mname.group(1)
        return out
    return {i + 1: line.strip() for i, line in enumerate(text.splitlines()) if line.strip()}


# ---------------------------------------------------------------- pre-processing (section 3)
def open_rgb(path) -> Image.Image:
    return Image.open(path).convert("RGB")


def resize_bilinear(img: Image.Image, w: int, h: int) -> Image.Image:
    return img.resize((w, h), Image.BILINEAR)


@dataclass
class InputSpec:
    name: str
    width: int
    height: int
    layout: str
    dtype: str
    channels: str
    mean: list
    std: list

    @classmethod
    def from_cfg(cls, cfg: dict) -> "InputSpec":
        i = cfg["input"]
        return cls(i["name"], i["width"], i["height"], i.get("layout", "nhwc"), i.get("dtype", "f32"),
                   i.get("channels", "rgb"), i.get("mean", [0.0] * 3), i.get("std", [1.0] * 3))


def to_tensor(img_wh: Image.Image, spec: InputSpec) -> np.ndarray:
    """An already-resized RGB image -> model input tensor with batch 1."""
    a = np.asarray(img_wh, dtype=np.uint8)
    if spec.channels == "bgr":
        a = a[:, :, ::-1]
    if spec.dtype == "u8":
        t = np.ascontiguousarray(a)
    else:
        mean = np.asarray(spec.mean, dtype=np.float32)
        std = np.asarray(spec.std, dtype=np.float32)
        t = (a.astype(np.float32) - mean) / std
        t = t.astype(np.float32)
    if spec.layout == "nchw":
        t = t.transpose(2, 0, 1)
    return np.ascontiguousarray(t[None])


def preprocess_frame(img: Image.Image, spec: InputSpec, resize: str = "stretch"):
    """Returns (tensor, mapping) where mapping turns normalised model coords into frame pixels."""
    w, h = img.size
    W, H = spec.width, spec.height
    if resize == "stretch":
        t = to_tensor(resize_bilinear(img, W, H), spec)
        return t, dict(kind="stretch", w=w, h=h)
    if resize == "letterbox":
        s = min(W / w, H / h)
        nw, nh = int(math.floor(w * s + 0.5)), int(math.floor(h * s + 0.5))
        canvas = Image.new("RGB", (W, H), (0, 0, 0))
        dx, dy = (W - nw) // 2, (H - nh) // 2
        canvas.paste(resize_bilinear(img, nw, nh), (dx, dy))
        return to_tensor(canvas, spec), dict(kind="letterbox", w=w, h=h, W=W, H=H, dx=dx, dy=dy, nw=nw, nh=nh)
    raise ValueError(resize)


def map_box(box_yxyx, m) -> list[float]:
    """Normalised [ymin, xmin, ymax, xmax] -> pixel [xmin, ymin, xmax, ymax] clamped to the frame."""
    ymin, xmin, ymax, xmax = (float(v) for v in box_yxyx)
    w, h = m["w"], m["h"]
    if m["kind"] == "stretch":
        xs = [xmin * w, xmax * w]
        ys = [ymin * h, ymax * h]
    else:
        xs = [(x * m["W"] - m["dx"]) * w / m["nw"] for x in (xmin, xmax)]
        ys = [(y * m["H"] - m["dy"]) * h / m["nh"] for y in (ymin, ymax)]
    xs = [min(max(x, 0.0), float(w)) for x in xs]
    ys = [min(max(y, 0.0), float(h)) for y in ys]
    return [xs[0], ys[0], xs[1], ys[1]]


# ---------------------------------------------------------------- ssd-raw post-processing (section 4)
def ssd_anchors(a: dict) -> np.ndarray:
    """[N, 4] anchors (ycenter, xcenter, h, w), float32, order layer -> y -> x -> box spec."""
    L = a["num_layers"]
    mn, mx = a["min_scale"], a["max_scale"]
    scales = [mn + (mx - mn) * i / (L - 1) for i in range(L)] + [1.0]
    ars = a["aspect_ratios"]
    interp = a.get("interpolated_scale_aspect_ratio", 1.0)
    reduce_ = a.get("reduce_boxes_in_lowest_layer", True)
    out = []
    for i, f in enumerate(a["feature_map_sizes"]):
        if i == 0 and reduce_:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[i], ar) for ar in ars]
            if interp > 0:
                specs.append((math.sqrt(scales[i] * scales[i + 1]), interp))
        for y in range(f):
            for x in range(f):
                for s, ar in specs:
                    out.append(((y + 0.5) / f, (x + 0.5) / f, s / math.sqrt(ar), s * math.sqrt(ar)))
    return np.asarray(out, dtype=np.float32)


def decode_boxes(enc: np.ndarray, anchors: np.ndarray, scales) -> np.ndarray:
    """enc [N,4] (ty, tx, th, tw) -> [N,4] clipped (ymin, xmin, ymax, xmax), float32."""
    enc = enc.astype(np.float32)
    sy, sx, sh, sw = (np.float32(s) for s in scales)
    ya, xa, ha, wa = anchors[:, 0], anchors[:, 1], anchors[:, 2], anchors[:, 3]
    yc = enc[:, 0] / sy * ha + ya
    xc = enc[:, 1] / sx * wa + xa
    h = np.exp(enc[:, 2] / sh) * ha
    w = np.exp(enc[:, 3] / sw) * wa
    half = np.float32(0.5)
    b = np.stack([yc - h * half, xc - w * half, yc + h * half, xc + w * half], axis=1)
    return np.clip(b, 0.0, 1.0).astype(np.float32)


def score_fn(x: np.ndarray, fn: str) -> np.ndarray:
    x = x.astype(np.float32)
    if fn == "sigmoid":
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32)
    if fn == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return x


def iou(a, b) -> float:
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return 0.0 if union <= 0 else inter / union


def nms_ssd_raw(boxes, scores, background_class, score_threshold, iou_threshold, max_detections):
    """boxes [N,4] normalised yxyx, scores [N,C] after score_fn.
    Returns a list of (score, class_id, anchor_index, box) ordered as section 4.5."""
    C = scores.shape[1]
    first = 1 if background_class else 0
    dets = []
    for c in range(first, C):
        col = scores[:, c]
        idx = np.nonzero(col >= np.float32(score_threshold))[0]
        if idx.size == 0:
            continue
        order = idx[np.lexsort((idx, -col[idx].astype(np.float64)))]
        kept = []
        for i in order:
            bi = [float(v) for v in boxes[i]]
            if all(iou(bi, [float(v) for v in boxes[k]]) <= iou_threshold for k in kept):
                kept.append(int(i))
                if len(kept) >= max_detections:
                    break
        class_id = c if background_class else c + 1
        dets += [(float(col[k]), class_id, k, boxes[k]) for k in kept]
    dets.sort(key=lambda d: (-d[0], d[1], d[2]))
    return dets[:max_detections]


# ---------------------------------------------------------------- running models
class Detector:
    def __init__(self, toml_path: Path, providers=("CPUExecutionProvider",), threads: int | None = None):
        import onnxruntime as ort

        self.toml_path = Path(toml_path)
        self.cfg = load_toml(self.toml_path)
        base = self.toml_path.parent
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(base / self.cfg["file"]), so, providers=list(providers))
        self.spec = InputSpec.from_cfg(self.cfg)
        self.labels = load_labels(base / self.cfg["labels"])
        self.contract = self.cfg["contract"]
        if self.contract == "ssd-raw":
            self.anchors = ssd_anchors(self.cfg["ssd"]["anchors"])

    def raw(self, tensor):
        if self.contract == "ssd-raw":
            s = self.cfg["ssd"]
            enc, cls = self.sess.run([s["box_encodings"], s["class_scores"]], {self.spec.name: tensor})
            return enc, cls
        t = self.cfg["tf_od_api"]
        return self.sess.run([t["boxes"], t["scores"], t["classes"], t["num_detections"]], {self.spec.name: tensor})

    def detect(self, img: Image.Image, score_threshold=0.3, iou_threshold=0.5, max_detections=100,
               resize="stretch"):
        tensor, m = preprocess_frame(img, self.spec, resize)
        out = []
        if self.contract == "ssd-raw":
            s = self.cfg["ssd"]
            enc, cls = self.raw(tensor)
            assert enc.shape[1] == self.anchors.shape[0], (enc.shape, self.anchors.shape)
            boxes = decode_boxes(enc[0], self.anchors, s["box_coder_scales"])
            scores = score_fn(cls[0], s["score_fn"])
            dets = nms_ssd_raw(boxes, scores, s["background_class"], score_threshold, iou_threshold,
                               max_detections)
            for score, cid, _, b in dets:
                out.append(dict(label=self.labels.get(cid, str(cid)), class_id=cid, score=score,
                                bbox=map_box(b, m)))
        else:
            boxes, scores, classes, num = self.raw(tensor)
            n = int(num[0])
            for k in range(n):
                sc = float(scores[0, k])
                if sc < score_threshold:
                    continue
                cid = int(round(float(classes[0, k])))
                out.append(dict(label=self.labels.get(cid, str(cid)), class_id=cid, score=sc,
                                bbox=map_box(boxes[0, k], m)))
            out = out[:max_detections]
        return out


def crop_box(img: Image.Image, bbox):
    """Section 5: float pixel box -> integer crop box clamped to the image, or None if empty."""
    w, h = img.size
    x0 = max(0, min(w, int(math.floor(bbox[0]))))
    y0 = max(0, min(h, int(math.floor(bbox[1]))))
    x1 = max(0, min(w, int(math.ceil(bbox[2]))))
    y1 = max(0, min(h, int(math.ceil(bbox[3]))))
    if x1 <= x0 or y1 <= y0:
        return None
    return [x0, y0, x1, y1]


class Embedder:
    def __init__(self, toml_path: Path, providers=("CPUExecutionProvider",), threads: int | None = None):
        import onnxruntime as ort

        self.toml_path = Path(toml_path)
        self.cfg = load_toml(self.toml_path)
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(self.toml_path.parent / self.cfg["file"]), so,
                                         providers=list(providers))
        self.spec = InputSpec.from_cfg(self.cfg)
        self.out_name = self.cfg["output"]["name"]

    def tensor(self, crop_img: Image.Image) -> np.ndarray:
        return to_tensor(resize_bilinear(crop_img, self.spec.width, self.spec.height), self.spec)

    def embed_images(self, imgs, batch: int = 32) -> np.ndarray:
        outs = []
        for i in range(0, len(imgs), batch):
            t = np.concatenate([self.tensor(im) for im in imgs[i:i + batch]], axis=0)
            outs.append(self.sess.run([self.out_name], {self.spec.name: t})[0])
        return np.concatenate(outs, axis=0)

    def embed_crop(self, img: Image.Image, bbox_int) -> np.ndarray:
        x0, y0, x1, y1 = bbox_int
        return self.embed_images([img.crop((x0, y0, x1, y1))])[0]


# ---------------------------------------------------------------- pose (CONTRACTS.md section 8)
# BlazePose GHUM landmark model: a square crop around a person box, 256x256 RGB in 0..1. The daemon (Rust)
# and this reference must agree exactly on the crop and on the mask -> frame mapping, so both are done in
# f32 / integer arithmetic as written here.
POSE_SIZE = 256
POSE_KEYPOINTS = 33       # the model gives 39 landmarks; 33..38 are auxiliary (ROI) points, not kept
POSE_STRIDE = 5           # x, y, z, visibility logit, presence logit per landmark
POSE_CROP_SCALE = np.float32(1.25)


def round_half_up(v) -> int:
    """floor(v + 0.5) in f32, as the daemon computes it."""
    return int(np.floor(np.float32(v) + np.float32(0.5)))


def pose_crop_square(box) -> tuple[int, int, int]:
    """Person box [xmin, ymin, xmax, ymax] (frame px, taken as f32) -> the square crop (x0, y0, s):
    s = round_half_up(1.25 * max(w, h)) (at least 1), centred on the box centre; x0, y0 may lie outside
    the frame."""
    xmin, ymin, xmax, ymax = (np.float32(v) for v in box)
    side = max(xmax - xmin, ymax - ymin)
    s = max(1, round_half_up(POSE_CROP_SCALE * side))
    half = np.float32(s) / np.float32(2)
    cx = (xmin + xmax) / np.float32(2)
    cy = (ymin + ymax) / np.float32(2)
    return round_half_up(cx - half), round_half_up(cy - half), s


def pose_crop(img: Image.Image, box) -> tuple[Image.Image, tuple[int, int, int]]:
    """The model's 256x256 input image of a person box, and its (x0, y0, s). Pixels outside the frame are
    black: Pillow's crop pads with zeros."""
    x0, y0, s = pose_crop_square(box)
    crop = img.crop((x0, y0, x0 + s, y0 + s))
    return resize_bilinear(crop, POSE_SIZE, POSE_SIZE), (x0, y0, s)


def pose_tensor(crop256: Image.Image) -> np.ndarray:
    """[1, 256, 256, 3] f32 NHWC, RGB / 255."""
    a = np.asarray(crop256, dtype=np.uint8).astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(a[None])


def sigmoid32(x) -> np.ndarray:
    """1 / (1 + exp(-x)) in f32; exp overflows to inf for mask logits below about -88, giving exactly 0."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)


def pose_decode(landmarks, confidence, mask_logits, crop: tuple[int, int, int]) -> dict:
    """One person's raw outputs ([195], [1], [256, 256, 1] or [256, 256]) -> keypoints in frame px.
    x_frame = x0 + x * s / 256 (same for y); visibility and presence are sigmoids of their logits; the
    confidence output is already a probability; mask = sigmoid(logit) over the square crop."""
    x0, y0, s = crop
    lm = np.asarray(landmarks, dtype=np.float32).reshape(-1, POSE_STRIDE)[:POSE_KEYPOINTS]
    scale = np.float32(s) / np.float32(POSE_SIZE)
    return {
        "x": np.float32(x0) + lm[:, 0] * scale,
        "y": np.float32(y0) + lm[:, 1] * scale,
        "z": lm[:, 2] * scale,
        "visibility": sigmoid32(lm[:, 3]),
        "presence": sigmoid32(lm[:, 4]),
        "confidence": float(np.asarray(confidence, dtype=np.float32).reshape(-1)[0]),
        "mask": sigmoid32(np.asarray(mask_logits, dtype=np.float32).reshape(POSE_SIZE, POSE_SIZE)),
    }


def pose_mask_index(p: int, origin: int, s: int):
    """Frame pixel coordinate p (one axis) -> the mask cell (0..255) whose area holds the pixel's centre,
    in integer arithmetic: floor((p - origin + 0.5) * 256 / s); None when p is outside the crop."""
    d = p - origin
    if d < 0 or d >= s:
        return None
    return ((2 * d + 1) * POSE_SIZE) // (2 * s)


def garment_mask(mask_prob: np.ndarray, crop: tuple[int, int, int], rect, threshold: float) -> np.ndarray:
    """The person mask over a frame rectangle (x, y, w, h): u8 [h, w], 255 where the pixel's mask cell
    (pose_mask_index on each axis) has probability > threshold, 0 elsewhere and outside the crop
    (CONTRACTS.md section 8.4)."""
    x0, y0, s = crop
    x, y, w, h = rect

    def cells(start, n, origin):
        d = np.arange(n, dtype=np.int64) + (start - origin)
        inside = (d >= 0) & (d < s)
        return np.where(inside, ((2 * d + 1) * POSE_SIZE) // (2 * s), 0), inside

    cols, cin = cells(x, w, x0)
    rows, rin = cells(y, h, y0)
    on = mask_prob[np.ix_(rows, cols)] > np.float32(threshold)
    on &= rin[:, None] & cin[None, :]
    return np.where(on, np.uint8(255), np.uint8(0))


def masked_crop(img: Image.Image, rect, mask_u8: np.ndarray, background=(255, 255, 255)) -> Image.Image:
    """The RGB crop of a frame rectangle with every pixel whose mask value is <= 127 (not the shopper)
    replaced by the background colour: what the embedder and the colour descriptor see."""
    x, y, w, h = rect
    a = np.asarray(img.crop((x, y, x + w, y + h)), dtype=np.uint8).copy()
    a[mask_u8 <= 127] = np.asarray(background, dtype=np.uint8)
    return Image.fromarray(a)


def mask_digest(mask_prob: np.ndarray) -> dict:
    """What the goldens keep of a mask: 32x32 area averages of the probabilities (8x8 cells each, row
    major) and the count of the 256x256 probabilities > 0.5."""
    m = np.asarray(mask_prob, dtype=np.float32).reshape(POSE_SIZE, POSE_SIZE)
    grid = m.reshape(32, 8, 32, 8).astype(np.float64).mean(axis=(1, 3))
    return {"grid32": [[float(v) for v in row] for row in grid], "count_gt_0_5": int((m > 0.5).sum())}


class Pose:
    """A pose model TOML ([pose] table, CONTRACTS.md section 8) run with onnxruntime."""

    def __init__(self, toml_path: Path, providers=("CPUExecutionProvider",), threads: int | None = None,
                 model_file: Path | None = None):
        import onnxruntime as ort

        self.toml_path = Path(toml_path)
        self.cfg = load_toml(self.toml_path)
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        path = model_file or self.toml_path.parent / self.cfg["file"]
        self.sess = ort.InferenceSession(str(path), so, providers=list(providers))
        self.spec = InputSpec.from_cfg(self.cfg)
        p = self.cfg["pose"]
        self.outputs = [p["landmarks"], p["confidence"], p["mask"]]

    def run(self, tensors: np.ndarray):
        """[N, 256, 256, 3] -> (landmarks [N, 195], confidence [N, 1], mask logits [N, 256, 256, 1])."""
        return self.sess.run(self.outputs, {self.spec.name: tensors})

    def persons(self, img: Image.Image, boxes) -> list[dict]:
        """Each box run on its own (batch 1): the decoded pose and its crop."""
        out = []
        for box in boxes:
            crop_img, crop = pose_crop(img, box)
            lm, conf, mask = self.run(pose_tensor(crop_img))
            d = pose_decode(lm[0], conf[0], mask[0], crop)
            d["crop"] = crop
            out.append(d)
        return out
