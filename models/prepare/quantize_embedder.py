"""Static int8 quantization (QDQ, per-channel weights) of the fp32 embedder, calibrated on real images
(Fashion-MNIST catalog-style items and vtest person crops written by export_embedder.py).
Quantized: the convolutions of blocks 4..15 and the head. Kept fp32: the stem and blocks 0..3 (quantizing
them drops the int8-vs-fp32 cosine of the PCA-256 embedding from ~0.99 to ~0.74 on held-out crops, while
they cost little time), the PCA projection and the L2 normalisation.
Usage: quantize_embedder.py fp32.onnx out_int8.onnx CALIB_DIR"""
import os
import sys
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)
from PIL import Image

src, dst, cal = sys.argv[1], sys.argv[2], Path(sys.argv[3])
files = sorted(cal.glob("*.png"))
print(f"calibration: {len(files)} real images")


class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter(range(0, len(files), 15))

    def get_next(self):
        i = next(self.it, None)
        if i is None:
            return None
        x = []
        for f in files[i:i + 15]:
            a = np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR), dtype=np.float32)
            x.append(((a - 127.0) / 128.0).transpose(2, 0, 1))
        return {"image": np.stack(x).astype(np.float32)}


pre = dst + ".pre.onnx"
quant_pre_process(src, pre, skip_symbolic_shape=True)
convs = [n.name for n in onnx.load(pre).graph.node if n.op_type == "Conv"]
keep_fp32 = [c for c in convs if "_conv_stem/" in c or any(f"/_blocks.{k}/" in c for k in range(4))]
print(f"{len(convs)} convolutions, {len(keep_fp32)} kept fp32")
quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=["Conv"], nodes_to_exclude=keep_fp32, calibrate_method=CalibrationMethod.MinMax)
os.remove(pre)
print("wrote", dst)
