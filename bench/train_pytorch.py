#!/usr/bin/env python3
"""Baseline for `aicp train`: the seed project's PyTorch recipe on the same IDX files.

MLP 784-128-64-10 with ReLU, cross-entropy, Adam lr 1e-3, batch 64, 5 epochs; 10% of the
training data held out (seeded) to pick the best epoch; the test split evaluated once at the end.
Batches are sliced from tensors already in memory (no DataLoader), the fastest way to feed
PyTorch, so the comparison does not flatter aicp. The training loop is timed the same way as
aicp's `train_seconds`: from the first batch to the last validation.

Usage: train_pytorch.py DATA_DIR [--threads N] [--epochs 5]
Prints one JSON line: {"train_seconds", "test_accuracy", "threads", "torch"}.
"""

import argparse
import gzip
import json
import struct
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    rank = raw[3]
    dims = struct.unpack(f">{rank}I", raw[4 : 4 + 4 * rank])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def load(data_dir: Path, split: str):
    def find(name):
        gz = data_dir / f"{name}.gz"
        return gz if gz.exists() else data_dir / name

    images = read_idx(find(f"{split}-images-idx3-ubyte"))
    labels = read_idx(find(f"{split}-labels-idx1-ubyte"))
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x_all, y_all = load(args.data_dir, "train")
    x_test, y_test = load(args.data_dir, "t10k")
    order = torch.randperm(len(x_all))
    n_val = round(0.1 * len(x_all))
    x_val, y_val = x_all[order[:n_val]], y_all[order[:n_val]]
    x_train, y_train = x_all[order[n_val:]], y_all[order[n_val:]]

    model = nn.Sequential(
        nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    best, best_state = -1.0, None

    started = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train))
        for start in range(0, len(perm), 64):
            idx = perm[start : start + 64]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
        model.eval()
        val = accuracy(model, x_val, y_val)
        if val > best:
            best = val
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    train_seconds = time.perf_counter() - started

    model.load_state_dict(best_state)
    print(json.dumps({
        "train_seconds": round(train_seconds, 3),
        "test_accuracy": round(accuracy(model, x_test, y_test), 4),
        "threads": args.threads,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
