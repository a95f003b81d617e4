"""The BASELINE for aicp's benchmarks, not product code: the seed project's classify route as a
typical Python deployment serves it, FastAPI + onnxruntime under uvicorn.

Run by bench/run.sh as

    AICP_BASELINE_MODEL=models/mnist/1/model.onnx \
        uvicorn bench.baseline_server:app --workers 2 --port 8100

one uvicorn worker per core, one onnxruntime thread per worker, the same model file aicp serves.
It answers POST /api/v1/ml/classify with the same request and response fields as aicp.
"""

import os
import time

import numpy as np
import onnxruntime
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = onnxruntime.InferenceSession(
    os.environ.get("AICP_BASELINE_MODEL", "models/mnist/1/model.onnx"),
    sess_options=options,
    providers=["CPUExecutionProvider"],
)
input_name = session.get_inputs()[0].name
input_shape = session.get_inputs()[0].shape  # [N, 1, 28, 28] or [N, 784]

app = FastAPI(title="baseline: FastAPI + onnxruntime")


class ClassifyRequest(BaseModel):
    image_data: list[float] | list[list[float]]
    model_name: str = "mnist"
    top_k: int = 5


@app.post("/api/v1/ml/classify")
def classify(request: ClassifyRequest):
    started = time.perf_counter()
    images = np.asarray(request.image_data, dtype=np.float32).reshape(-1, 784)
    if images.min(initial=0.0) < 0.0 or images.max(initial=0.0) > 1.0:
        raise HTTPException(422, "input values must be in [0, 1]")
    feed = images.reshape([-1] + [d if isinstance(d, int) else 1 for d in input_shape[1:]])
    logits = session.run(None, {input_name: feed})[0]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    k = max(1, min(request.top_k, probabilities.shape[1]))
    results = []
    for row in probabilities:
        top = np.argsort(-row)[:k]
        results.append(
            [{"class": int(c), "label": str(c), "confidence": float(row[c])} for c in top]
        )
    body = {"model_name": request.model_name, "model_version": 1}
    if np.asarray(request.image_data[0]).ndim == 0:
        body["predictions"] = results[0]
    else:
        body["results"] = [{"predictions": p} for p in results]
    body["inference_time_ms"] = (time.perf_counter() - started) * 1e3
    return body
