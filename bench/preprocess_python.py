"""The baseline for aicp's picture preparation: the same JPEG decoded and made an ImageNet input
in Python, in process, as its experts write it: PIL and torchvision's transforms (Resize(256),
CenterCrop(224), ToTensor, Normalize) when torchvision is installed, else the same steps with
PIL and numpy (tests/fixtures/preprocess.py's `imagenet_tensor`, which gives torchvision's
tensors exactly). Prints the median time per picture in microseconds, as JSON.

    preprocess_python.py JPEG
"""

import io
import json
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "crates/aicp-cli/tests/fixtures"))


def pipeline():
    try:
        from torchvision import transforms

        steps = transforms.Compose([
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])
        return "PIL + torchvision", steps
    except ImportError:
        from preprocess import imagenet_tensor

        return "PIL + numpy (torchvision's steps)", imagenet_tensor


def main():
    data = Path(sys.argv[1]).read_bytes()
    name, steps = pipeline()
    prepare = lambda: steps(Image.open(io.BytesIO(data)).convert("RGB"))
    for _ in range(20):
        prepare()
    times = []
    deadline = time.perf_counter() + 5
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        prepare()
        times.append(time.perf_counter() - start)
    print(json.dumps({"baseline": name, "median_us": statistics.median(times) * 1e6,
                      "runs": len(times)}))


if __name__ == "__main__":
    main()
