"""Checks that the tf2onnx-converted detector gives the same raw outputs as the original TFLite model.
Run in the TensorFlow environment:  check_tflite_onnx.py model.tflite model.onnx image...  """
import sys

import numpy as np
import tensorflow as tf
from PIL import Image
import onnx  # noqa: F401  (only to fail early when missing)

tfl, onx, imgs = sys.argv[1], sys.argv[2], sys.argv[3:]
interp = tf.lite.Interpreter(model_path=tfl)
interp.allocate_tensors()
inp = interp.get_input_details()[0]
outs = interp.get_output_details()

# onnxruntime is not installed in the TF environment; evaluate the ONNX with the reference backend
from onnx.reference import ReferenceEvaluator  # noqa: E402

ref = ReferenceEvaluator(onx)
worst = 0.0
for p in imgs:
    a = np.asarray(Image.open(p).convert("RGB").resize((300, 300), Image.BILINEAR), dtype=np.float32)
    x = ((a - 127.5) / 127.5)[None].astype(np.float32)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    t = {o["name"]: interp.get_tensor(o["index"]) for o in outs}
    o = ref.run(None, {"normalized_input_image_tensor": x})
    names = [n.name for n in ref.proto_.graph.output] if hasattr(ref, "proto_") else list(t)
    for name, val in zip(["raw_outputs/box_encodings", "raw_outputs/class_predictions"], o):
        d = float(np.abs(t[name] - val).max())
        worst = max(worst, d)
        print(f"{p}: {name} max|tflite-onnx| = {d:.2e}")
print("worst", worst)
sys.exit(0 if worst < 1e-3 else 1)
