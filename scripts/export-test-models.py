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
  state's batch is its second dimension, as in torch's recurrent layers).

torch 2.15 and transformers 5.25 wrote the committed files.
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


if __name__ == "__main__":
    main()
