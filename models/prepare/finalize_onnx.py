"""Normalises an exported ONNX file so older runtimes load it: IR version 8, only the opsets used,
checks it; graph input/output names are kept as exported.
Usage: finalize_onnx.py in.onnx out.onnx [--doc TEXT] [--outputs A,B,...] [--dynamic-batch]

--outputs keeps only those graph outputs (and drops the nodes only the others needed), so the runtime
does not compute results nobody reads.
--dynamic-batch makes the first axis of every graph input and output the symbolic "batch": TFLite
conversions come out with batch 1 fixed, also in the target shapes of their Reshape nodes, which are
rewritten from 1 to -1 (only those whose shape constant starts with 1 and is used by that Reshape alone)."""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def arg(flag):
    return sys.argv[sys.argv.index(flag) + 1] if flag in sys.argv else None


def keep_outputs(m, names):
    missing = set(names) - {o.name for o in m.graph.output}
    assert not missing, f"no such outputs: {sorted(missing)}"
    kept = [o for o in m.graph.output if o.name in names]
    del m.graph.output[:]
    m.graph.output.extend(kept)
    # walk back from the kept outputs; a node is needed when it produces something needed
    needed, nodes = set(names), []
    for n in reversed(list(m.graph.node)):
        if any(o in needed for o in n.output):
            nodes.append(n)
            needed |= set(n.input)
    del m.graph.node[:]
    m.graph.node.extend(reversed(nodes))
    inits = [i for i in m.graph.initializer if i.name in needed]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)


def dynamic_batch(m):
    g = m.graph
    for vi in list(g.input) + list(g.output):
        d0 = vi.type.tensor_type.shape.dim[0]
        d0.Clear()
        d0.dim_param = "batch"
    del g.value_info[:]  # intermediate shapes were inferred with batch 1
    inits = {i.name: i for i in g.initializer}
    uses = {}
    for n in g.node:
        for x in n.input:
            uses[x] = uses.get(x, 0) + 1
    for n in g.node:
        if n.op_type != "Reshape" or n.input[1] not in inits or uses[n.input[1]] != 1:
            continue
        shape = numpy_helper.to_array(inits[n.input[1]])
        if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
            shape = shape.copy()
            shape[0] = -1
            inits[n.input[1]].CopyFrom(numpy_helper.from_array(shape.astype(np.int64), n.input[1]))
            print(f"  reshape {n.name}: batch 1 -> -1 {shape.tolist()}")
        elif shape.ndim == 1 and shape.size > 1 and shape[0] not in (-1, 0):
            raise SystemExit(f"reshape {n.name} fixes the batch to {shape[0]}; cannot make it dynamic")


src, dst = sys.argv[1], sys.argv[2]
doc = arg("--doc")
m = onnx.load(src)
if arg("--outputs"):
    keep_outputs(m, arg("--outputs").split(","))
if "--dynamic-batch" in sys.argv:
    dynamic_batch(m)
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
print(dst, "ir", m.ir_version, [(o.domain, o.version) for o in m.opset_import],
      "outputs", [o.name for o in m.graph.output])
