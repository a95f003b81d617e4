"""Writes the torch and transformers exports the real-model tests serve, with random weights
(seeded), into crates/aicp-cli/tests/fixtures/exported/. Run once by hand when they change, and
commit what it writes: PyTorch's wheel pulls several GB of CUDA libraries, too much for CI.

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch transformers onnx onnxscript
    /tmp/torchenv/bin/python scripts/export-test-models.py

What it writes (each small, with random weights; none was written for aicp's own models):
- text_encoder.onnx: a BERT (transformers' BertModel, 2 layers of width 32) taking int64
  input_ids, attention_mask and token_type_ids, batch and sequence dynamic, giving
  last_hidden_state and pooler_output;
- image_classifier.onnx: a ResNet (transformers' ResNetForImageClassification, two stages)
  taking float pixel_values [batch, 3, height, width], batch, height and width dynamic;
- streaming_gru.onnx: a stateful model: a GRU step over x [batch, time, 16] from the state h
  [1, batch, 32], scaled by an int64 scalar `gain`, giving y and the next state h_next (the
  state's batch is its second dimension, as in torch's recurrent layers);
- torchvision_classifier.onnx: torchvision's ShuffleNetV2 (narrow stages, ImageNet's 1,000
  classes) taking float [batch, 3, 224, 224]; its batch-norm statistics are those of
  scikit-image's photographs through torchvision's Resize(256), CenterCrop(224) and ImageNet's
  Normalize, so that its answers on photographs are not all alike. The script also checks that
  the PIL-only pipeline the preprocessing test uses in CI (tests/fixtures/preprocess.py, where
  torchvision cannot be installed) gives exactly torchvision's tensors on those photographs.

torch 2.15, transformers 5.25 and torchvision 0.29.2 (installed with --no-deps; its transforms
and models are Python) wrote the committed files; scikit-image for the photographs.
"""

from pathlib import Path

import torch
import transformers

OUT = Path(__file__).resolve().parent.parent / "crates/aicp-cli/tests/fixtures/exported"
OPSET = 17


def export(model, args, path, inputs, outputs, dynamic):
    model.eval()
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=dynamic,
        opset_version=OPSET,
        dynamo=False,
    )
    print(f"wrote {path} ({path.stat().st_size} bytes)")


class TextEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        config = transformers.BertConfig(
            vocab_size=1000,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
        self.bert = transformers.BertModel(config)

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            return_dict=True,
        )
        return out.last_hidden_state, out.pooler_output


class ImageClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        config = transformers.ResNetConfig(
            embedding_size=8,
            hidden_sizes=[8, 16],
            depths=[1, 1],
            layer_type="basic",
            num_labels=10,
        )
        self.resnet = transformers.ResNetForImageClassification(config)

    def forward(self, pixel_values):
        return self.resnet(pixel_values=pixel_values, return_dict=True).logits


class StreamingGru(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(16, 32, batch_first=True)
        self.head = torch.nn.Linear(32, 4)

    def forward(self, x, h, gain):
        y, h_next = self.gru(x, h)
        return self.head(y) * gain.to(torch.float32), h_next


def photographs():
    """scikit-image's bundled photographs as RGB PIL images."""
    import numpy as np
    import skimage.data
    from PIL import Image

    pictures = []
    for name in ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                 "immunohistochemistry", "colorwheel", "retina", "stereo_motorcycle",
                 "camera", "moon", "coins", "clock", "page", "text", "grass", "gravel",
                 "brick", "cell", "checkerboard"]:
        array = getattr(skimage.data, name)()
        if isinstance(array, tuple):
            array = array[0]
        pictures.append(Image.fromarray(np.asarray(array, np.uint8)).convert("RGB"))
    return pictures


def torchvision_classifier():
    import sys
    import numpy as np
    import torchvision
    from torchvision import transforms

    sys.path.insert(0, str(OUT.parent))
    from preprocess import imagenet_tensor

    pipeline = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    pictures = photographs()
    batch = torch.stack([pipeline(p) for p in pictures])
    for picture, expected in zip(pictures, batch):
        assert np.array_equal(imagenet_tensor(picture), expected.numpy()), "PIL pipeline differs"
    model = torchvision.models.ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=1000)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()
    export(
        model,
        (batch[:1],),
        OUT / "torchvision_classifier.onnx",
        ["pixel_values"],
        ["logits"],
        {"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
    )


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    ids = torch.randint(0, 1000, (2, 7))
    export(
        TextEncoder(),
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        OUT / "text_encoder.onnx",
        ["input_ids", "attention_mask", "token_type_ids"],
        ["last_hidden_state", "pooler_output"],
        {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "token_type_ids": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"},
            "pooler_output": {0: "batch"},
        },
    )
    export(
        ImageClassifier(),
        (torch.rand(1, 3, 64, 48),),
        OUT / "image_classifier.onnx",
        ["pixel_values"],
        ["logits"],
        {"pixel_values": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
    )
    export(
        StreamingGru(),
        (torch.rand(2, 5, 16), torch.zeros(1, 2, 32), torch.tensor(3, dtype=torch.int64)),
        OUT / "streaming_gru.onnx",
        ["x", "h", "gain"],
        ["y", "h_next"],
        {
            "x": {0: "batch", 1: "time"},
            "h": {1: "batch"},
            "y": {0: "batch", 1: "time"},
            "h_next": {1: "batch"},
        },
    )
    torchvision_classifier()


if __name__ == "__main__":
    main()
