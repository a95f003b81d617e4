"""The onnxruntime Python package on the bundled MNIST model, in process, one thread: what aicp's
in-process engine throughput is compared with (bench/run.sh). The input is the same as in
crates/aicp-engine/benches/engines.rs.

Usage: onnxruntime_engine.py MODEL.onnx OUT.json
"""

import json
import sys
import time

import numpy as np
import onnxruntime

options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = onnxruntime.InferenceSession(
    sys.argv[1], sess_options=options, providers=["CPUExecutionProvider"]
)
name = session.get_inputs()[0].name

figures = []
for batch, runs in [(1, 20000), (1024, 250)]:
    data = (np.arange(batch * 784) % 256).astype(np.float32) / 255.0
    feed = {name: data.reshape(batch, 1, 28, 28)}
    for _ in range(runs // 10):
        session.run(None, feed)
    # The best of five rounds, as the Rust side does: noise only ever slows a round down.
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(runs // 5):
            session.run(None, feed)
        rounds.append((time.perf_counter() - started) / (runs // 5))
    seconds = min(rounds)
    figures.append({"batch": batch, "samples_per_s": batch / seconds})
    print(f"onnxruntime (Python) batch {batch:>4}: {seconds * 1e6:9.1f} us, {batch / seconds:9.0f} samples/s")

with open(sys.argv[2], "w") as out:
    json.dump(figures, out)
