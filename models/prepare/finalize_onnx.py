"""Normalises an exported ONNX file so older runtimes load it: IR version 8, only the opsets used,
checks it, optionally renames nothing (graph input/output names are kept as exported).
Usage: finalize_onnx.py in.onnx out.onnx [--doc TEXT]"""
import sys

import onnx

src, dst = sys.argv[1], sys.argv[2]
doc = sys.argv[sys.argv.index("--doc") + 1] if "--doc" in sys.argv else None
m = onnx.load(src)
used = {n.domain or "" for n in m.graph.node}
for f in m.functions:
    used |= {n.domain or "" for n in f.node}
keep = [o for o in m.opset_import if (o.domain or "") in used or (o.domain or "") == ""]
del m.opset_import[:]
m.opset_import.extend(keep)
for o in m.opset_import:
    if (o.domain or "") == "":
        assert o.version == 17, f"expected opset 17, got {o.version}"
m.ir_version = 8
m.producer_name = "vitrine-models-prepare"
if doc:
    m.doc_string = doc
onnx.checker.check_model(m, full_check=True)
onnx.save(m, dst)
print(dst, "ir", m.ir_version, [(o.domain, o.version) for o in m.opset_import])
