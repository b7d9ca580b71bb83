"""Static int8 quantization (QDQ, per-channel weights) of the fp32 SSD detector, calibrated on real
vtest.avi frames (never random data).

Usage: quantize_detector.py fp32.onnx out_int8.onnx frames_dir --exclude-from N --exclude-to M
Calibration uses every 6th frame of the video, skipping the demo stretch [N, M) so that the int8-vs-fp32
figures measured on the demo frames are on frames the calibration never saw."""
import argparse
import glob
import os

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("fp32")
ap.add_argument("out")
ap.add_argument("frames")
ap.add_argument("--exclude-from", type=int, default=0)
ap.add_argument("--exclude-to", type=int, default=0)
ap.add_argument("--step", type=int, default=6)
args = ap.parse_args()

files = sorted(glob.glob(os.path.join(args.frames, "f_*.png")))
sel = [f for i, f in enumerate(files) if i % args.step == 0 and not (args.exclude_from <= i < args.exclude_to)]
print(f"calibration: {len(sel)} real frames of {len(files)}")


class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter(sel)

    def get_next(self):
        f = next(self.it, None)
        if f is None:
            return None
        a = np.asarray(Image.open(f).convert("RGB").resize((300, 300), Image.BILINEAR), dtype=np.float32)
        return {"normalized_input_image_tensor": ((a - 127.5) / 127.5)[None].astype(np.float32)}


pre = args.out + ".pre.onnx"
quant_pre_process(args.fp32, pre, skip_symbolic_shape=True)
quantize_static(pre, args.out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax)
os.remove(pre)
print("wrote", args.out)
