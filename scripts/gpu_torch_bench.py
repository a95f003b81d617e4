"""PyTorch on the same GPU, with the same weights: the baseline for `aicp gpu bench`.

Rebuilds the ONNX model's Gemm/Relu/Flatten layers as a torch.nn.Sequential (checked against
onnxruntime on the CPU), then measures the host round trip: host input to the device, the
forward pass, the logits back to the host. One line per figure, in `aicp gpu bench`'s format.

    python3 scripts/gpu_torch_bench.py models/mnist/1/model.onnx [--batches 1,64,1024,16384]

`--device cpu` runs it where there is no GPU (without the pinned-memory figures): a check of
the script itself before a GPU run.
"""

import argparse
import time

import numpy as np
import onnx
import torch
from onnx import numpy_helper


def layers_of(path):
    """The model as torch layers; fails on any operator other than Flatten, Reshape, Gemm, Relu."""
    model = onnx.load(path)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type in ("Flatten", "Reshape"):
            layers.append(torch.nn.Flatten())
        elif node.op_type == "Relu":
            layers.append(torch.nn.ReLU())
        elif node.op_type == "Gemm":
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            weight = weights[node.input[1]]
            if not attributes.get("transB", 0):
                weight = weight.T
            linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.tensor(weight))
                linear.bias.copy_(torch.tensor(weights[node.input[2]]))
            layers.append(linear)
        else:
            raise SystemExit(f"operator {node.op_type} is not rebuilt here")
    return torch.nn.Sequential(*layers)


def digit_like(batch, rng):
    """Mostly background, like MNIST digits: 1 pixel in 5 random ink."""
    pixels = rng.integers(0, 256, size=(batch, 1, 28, 28), dtype=np.uint8)
    pixels[rng.random(pixels.shape) >= 0.2] = 0
    return pixels


def measure(seconds, step):
    for _ in range(2):
        step()
    times = []
    started = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < seconds:
        call = time.perf_counter()
        step()
        times.append(time.perf_counter() - call)
    return times


def report(engine, input_type, batch, times):
    median = sorted(times)[len(times) // 2]
    print(
        f"bench engine={engine} input={input_type} batch={batch} "
        f"samples_per_s={batch * len(times) / sum(times):.0f} median_us={median * 1e6:.1f} "
        f"runs={len(times)}",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--batches", default="1,64,1024,16384")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--device", default="cuda", help="cpu tries this script without a GPU")
    args = parser.parse_args()

    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    net = layers_of(args.model).eval().to(device)
    rng = np.random.default_rng(0)
    name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    print(f"torch {torch.__version__} device=\"{name}\"", flush=True)

    # The same weights: torch on the GPU against onnxruntime on the CPU.
    import onnxruntime

    check = digit_like(64, rng).astype(np.float32) / 255
    session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: check})[0]
    with torch.inference_mode():
        got = net(torch.from_numpy(check).to(device)).cpu().numpy()
    print(f"torch weights max_abs_diff_vs_onnxruntime={np.abs(got - expected).max():.2e}", flush=True)

    with torch.inference_mode():
        for batch in (int(b) for b in args.batches.split(",")):
            pixels = digit_like(batch, rng)
            floats = pixels.astype(np.float32) / 255

            # What a server written in PyTorch does per request: a host array in, logits out.
            def fp32():
                net(torch.from_numpy(floats).to(device)).cpu()

            report("torch", "fp32", batch, measure(args.seconds, fp32))

            # The same with the input in pinned memory, copied asynchronously.
            if on_gpu:
                pinned = torch.from_numpy(floats).pin_memory()

                def fp32_pinned():
                    net(pinned.to(device, non_blocking=True)).cpu()

                report("torch-pinned", "fp32", batch, measure(args.seconds, fp32_pinned))

            # uint8 to the device, normalised there: aicp's uint8 path, in PyTorch.
            def uint8():
                net(torch.from_numpy(pixels).to(device).float().div_(255)).cpu()

            report("torch", "uint8", batch, measure(args.seconds, uint8))


if __name__ == "__main__":
    main()
