"""The BASELINE for aicp's text-embedding figures, not product code: text-embeddings-inference's
`/embed` as a typical Python deployment serves it, FastAPI + Hugging Face's `tokenizers` +
onnxruntime under uvicorn, doing the same work as aicp's `/api/v1/ml/embed`: tokenise (the
model's tokenizer.json, truncated to 128 tokens, padded to the request's longest), run the
encoder, mean-pool its last hidden state over the attention mask, L2-normalise.

Run by bench/run.sh as

    AICP_EMBED_MODEL_DIR=DIR uvicorn bench.embed_server:app --workers 2 --port 8100

DIR holding 1/model.onnx and tokenizer.json, as aicp serves it: one uvicorn worker per core,
one onnxruntime thread per worker (its workers tuned as for the classify baseline; more
threads per worker only contend for the same cores).
"""

import os
from pathlib import Path

import numpy as np
import onnxruntime
from fastapi import FastAPI
from pydantic import BaseModel
from tokenizers import Tokenizer

directory = Path(os.environ.get("AICP_EMBED_MODEL_DIR", "models/encoder"))
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = onnxruntime.InferenceSession(
    str(directory / "1" / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
)
tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
tokenizer.enable_truncation(128)
tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0)

app = FastAPI(title="baseline: FastAPI + tokenizers + onnxruntime")


class EmbedRequest(BaseModel):
    inputs: str | list[str]
    normalize: bool = True


@app.post("/api/v1/ml/embed")
def embed(request: EmbedRequest) -> list[list[float]]:
    texts = [request.inputs] if isinstance(request.inputs, str) else request.inputs
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], np.int64)
    mask = np.array([e.attention_mask for e in encodings], np.int64)
    hidden = session.run(
        ["last_hidden_state"],
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
    )[0]
    summed = (hidden * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
    if request.normalize:
        summed /= np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)
    return summed.tolist()
