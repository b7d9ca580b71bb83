"""int8 quantization of the fp32 pose model, for measurement (MODEL_CARD.md, "Pose: int8").

  quantize_pose.py fp32.onnx out_static.onnx frames_dir --exclude-from N --exclude-to M

static: QDQ, per-channel int8 weights, uint8 activations, MinMax calibration on real person crops (pose crop
rule) of vtest.avi frames: every 6th frame, skipping the demo stretch [N, M) so that int8-vs-fp32 figures on
the demo frames are on crops the calibration never saw. Boxes: the shipped int8 detector's Person boxes
(>= 0.4). (quantize_dynamic was tried too: its ConvInteger kernels made the model 6x slower than fp32.)"""
import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vitrine_ref as vr  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("fp32")
ap.add_argument("out_static")
ap.add_argument("frames")
ap.add_argument("--exclude-from", type=int, default=0)
ap.add_argument("--exclude-to", type=int, default=0)
ap.add_argument("--step", type=int, default=6)
args = ap.parse_args()

files = sorted(glob.glob(os.path.join(args.frames, "f_*.png")))
sel = [f for i, f in enumerate(files) if i % args.step == 0 and not (args.exclude_from <= i < args.exclude_to)]
det = vr.Detector(vr.REPO / "models/ssd_mobilenetv2_oidv4_int8.toml")
crops = []
for f in sel:
    img = vr.open_rgb(f)
    for d in det.detect(img, score_threshold=0.4):
        if d["label"] == "Person":
            crops.append(vr.pose_tensor(vr.pose_crop(img, d["bbox"])[0]))
print(f"calibration: {len(crops)} person crops from {len(sel)} real frames of {len(files)}")


class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter(crops)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {"input_1": x}


pre = args.out_static + ".pre.onnx"
quant_pre_process(args.fp32, pre, skip_symbolic_shape=True)
quantize_static(pre, args.out_static, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax)
os.remove(pre)
print("wrote", args.out_static)
