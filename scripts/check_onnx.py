#!/usr/bin/env python3
"""Check an ONNX file with the reference tools: the `onnx` package's full checker (with shape
inference), then ONNX Runtime's predictions against expected logits.

Usage: check_onnx.py MODEL.onnx INPUTS.f32 EXPECTED_LOGITS.f32
The .f32 files are raw little-endian float32: inputs [N, 1, 28, 28], logits [N, classes].
Exits non-zero when a check fails.
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort

TOLERANCE = 1e-4


def main():
    model_path, inputs_path, expected_path = sys.argv[1:4]
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    print("onnx.checker: ok")
    print("ops: " + " ".join(node.op_type for node in model.graph.node))

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    inputs = np.fromfile(inputs_path, dtype="<f4").reshape(-1, 1, 28, 28)
    (logits,) = session.run(None, {model_input.name: inputs})
    expected = np.fromfile(expected_path, dtype="<f4").reshape(logits.shape)
    difference = float(np.max(np.abs(logits - expected)))
    agree = int(np.sum(logits.argmax(1) == expected.argmax(1)))
    print(f"onnxruntime {ort.__version__}: max |difference| {difference:.3g}, argmax agrees on {agree}/{len(logits)}")
    if difference >= TOLERANCE or agree != len(logits):
        sys.exit(f"onnxruntime disagrees with the expected logits (tolerance {TOLERANCE})")
    print("onnxruntime: ok")


if __name__ == "__main__":
    main()
