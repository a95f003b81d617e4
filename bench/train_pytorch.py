#!/usr/bin/env python3
"""Baseline for `aicp train`: the same recipes in PyTorch on the same IDX files.

- `--arch mlp` (default): the seed project's MLP 784-128-64-10 with ReLU.
- `--arch cnn`: aicp's CNN, (Conv kxk -> ReLU -> MaxPool 2) per `--channels` entry, then
  dropout and dense layers `--hidden` with ReLU, then dropout and the 10 logits.
- `--augment`: aicp's augmentation (random shift up to 2 px, rotation up to 10 degrees, scale
  up to 10%, bilinear, zeros outside), done per batch with affine_grid/grid_sample.

Cross-entropy, Adam lr 1e-3, batch 64; 10% of the training data held out (seeded) to pick the
best epoch; the test split evaluated once at the end. Batches are sliced from tensors already
in memory (no DataLoader), the fastest way to feed PyTorch, so the comparison does not flatter
aicp. The training loop is timed the same way as aicp's `train_seconds`: from the first batch
to the last validation.

Usage: train_pytorch.py DATA_DIR [--threads N] [--epochs 5] [--arch mlp|cnn] [--augment] ...
Prints one JSON line: {"train_seconds", "test_accuracy", "seconds_per_epoch", "threads", "torch"}.
"""

import argparse
import gzip
import json
import struct
import time
from pathlib import Path

import math

import numpy as np
import torch
import torch.nn.functional as F
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


def build(args):
    if args.arch == "mlp":
        widths = [784, *args.hidden, 10]
        layers = [nn.Flatten()]
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i + 2 < len(widths):
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)
    layers, channels, side = [nn.Unflatten(1, (1, 28, 28))], 1, 28
    for out in args.channels:
        layers += [nn.Conv2d(channels, out, args.kernel), nn.ReLU(), nn.MaxPool2d(2)]
        channels, side = out, (side - args.kernel + 1) // 2
    widths = [channels * side * side, *args.hidden, 10]
    layers.append(nn.Flatten())
    for i in range(len(widths) - 1):
        layers += [nn.Dropout(args.dropout), nn.Linear(widths[i], widths[i + 1])]
        if i + 2 < len(widths):
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def augment(x):
    """aicp's augmentation on a batch of flat images, one random transform per image."""
    n = len(x)
    shift = (torch.rand(n, 2) * 2 - 1) * 2.0
    angle = (torch.rand(n) * 2 - 1) * math.radians(10.0)
    scale = 1 + (torch.rand(n) * 2 - 1) * 0.1
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # The inverse map in grid_sample's [-1, 1] coordinates (align_corners=True: 27 px = 2).
    theta = torch.stack(
        [
            torch.stack([cos, sin, -(cos * shift[:, 0] + sin * shift[:, 1]) * 2 / 27], 1),
            torch.stack([-sin, cos, -(-sin * shift[:, 0] + cos * shift[:, 1]) * 2 / 27], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, (n, 1, 28, 28), align_corners=True)
    images = F.grid_sample(x.view(n, 1, 28, 28), grid, align_corners=True, padding_mode="zeros")
    return images.view(n, 784)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--arch", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--hidden", type=lambda s: [int(w) for w in s.split(",")], default=None)
    parser.add_argument("--channels", type=lambda s: [int(w) for w in s.split(",")], default=[16, 32])
    parser.add_argument("--kernel", type=int, default=5)
    parser.add_argument("--dropout", type=float, default=0.25)
    parser.add_argument("--augment", action="store_true")
    args = parser.parse_args()
    if args.hidden is None:
        args.hidden = [128, 64] if args.arch == "mlp" else [128]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x_all, y_all = load(args.data_dir, "train")
    x_test, y_test = load(args.data_dir, "t10k")
    order = torch.randperm(len(x_all))
    n_val = round(0.1 * len(x_all))
    x_val, y_val = x_all[order[:n_val]], y_all[order[:n_val]]
    x_train, y_train = x_all[order[n_val:]], y_all[order[n_val:]]

    model = build(args)
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
            x = augment(x_train[idx]) if args.augment else x_train[idx]
            loss = loss_fn(model(x), y_train[idx])
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
        "seconds_per_epoch": round(train_seconds / args.epochs, 3),
        "threads": args.threads,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
