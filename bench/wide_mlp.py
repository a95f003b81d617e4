"""Writes a wide MLP for MNIST-shaped inputs (784 -> 2048 ReLU -> 2048 ReLU -> 10, random weights,
seeded), heavy enough for the engine to be the bottleneck over HTTP: about 5.8 million
multiply-adds a sample, 50x the bundled MLP. A single sample runs as matrix-vector products,
which stream every weight for one row; a batch streams them once for all its rows, which is
what the dynamic batcher is for. Its answers mean nothing; only its cost matters.

Usage: wide_mlp.py MODEL_DIR   (writes MODEL_DIR/1/model.onnx and MODEL_DIR/model.toml)
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
rng = np.random.default_rng(7)
sizes = [784, 2048, 2048, 10]
nodes, weights = [], []
previous = "input"
for layer, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
    w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
    b = np.zeros(n_out, dtype=np.float32)
    weights += [numpy_helper.from_array(w, f"w{layer}"), numpy_helper.from_array(b, f"b{layer}")]
    last = layer == len(sizes) - 2
    gemm = "logits" if last else f"gemm{layer}"
    nodes.append(helper.make_node("Gemm", [previous, f"w{layer}", f"b{layer}"], [gemm]))
    if not last:
        nodes.append(helper.make_node("Relu", [gemm], [f"relu{layer}"]))
        previous = f"relu{layer}"
graph = helper.make_graph(
    nodes,
    "wide_mlp",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 784])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
    weights,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
os.makedirs(os.path.join(out, "1"), exist_ok=True)
onnx.save(model, os.path.join(out, "1", "model.onnx"))
with open(os.path.join(out, "model.toml"), "w") as f:
    f.write('description = "A wide MLP with random weights, for benchmarks (bench/wide_mlp.py)"\n')
    f.write('task = "classification"\noutput = "logits"\n')
