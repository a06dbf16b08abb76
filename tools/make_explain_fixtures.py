#!/usr/bin/env python3
"""Makes tests/fixtures/explain/: PyTorch reference maps for the explain layer.

Run from the repository root with the reference environment:
    /work/refenv/venv/bin/python tools/make_explain_fixtures.py [--shared ../shared]

Model: shared/data/models/efficientnet_lite0.onnx through onnx2torch (reference.py's OnnxWrapper),
layer `/_head_act/Clip_output_0` (1280x7x7), class 285 (Egyptian cat). Inputs are stored as the
224x224 uint8 images that reference.py's preprocessing produces (PIL bilinear squash); the model
input is x = (u8 / 255 - mean) / std in float32 with the ImageNet mean/std, computed the same
way on both sides, so the tests do not depend on resize details.

Files (all .npy, float32 unless noted):
  <img>_u8.npy             (224, 224, 3) uint8, for chelsea and coffee
  chelsea_logits.npy       (1000,)
  chelsea_gradcam_weights.npy (1280,)   alpha_k = mean_ij dy/dA_k
  chelsea_gradcam_raw.npy  (7, 7)       relu(sum_k alpha_k A_k)
  chelsea_gradcampp_raw.npy (7, 7)      Grad-CAM++ closed form (below)
  chelsea_gradcam.npy      (56, 56)     upsampled + min-max map, every 4th pixel (rows/cols 0,4,..)
  chelsea_saliency_raw.npy (3, 56, 56)  dy/dx, every 4th pixel
  chelsea_saliency.npy     (56, 56)     max_c |dy/dx| / max, every 4th pixel
Grad-CAM++ (pytorch-grad-cam's form): g = dy/dA, s_k = sum_ij A_k,
  a = g^2 / (2 g^2 + s_k g^3 + 1e-7), a = 0 where g == 0, w_k = sum_ij a * relu(g), cam = relu(sum_k w_k A_k).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
LAYER = "/_head_act/Clip_output_0"
CLASS = 285


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared"))
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "explain"))
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(a.shared, "tools", "reference"))
    import reference
    import refmodels

    torch.set_num_threads(2)
    os.makedirs(a.out, exist_ok=True)
    ow = reference.OnnxWrapper(os.path.join(a.shared, "data", "models", "efficientnet_lite0.onnx"))
    model = ow.torch.eval()
    reference.disable_inplace(model)
    _node, _tensor, modname = ow.resolve(LAYER)
    layer = dict(model.named_modules())[modname]

    meta = {"script": "tools/make_explain_fixtures.py", "torch": torch.__version__,
            "numpy": np.__version__, "layer": LAYER, "class": CLASS}
    for name in ["chelsea", "coffee"]:
        img = refmodels.load_rgb(os.path.join(a.shared, "data", "images", f"{name}.png"))
        _x, u8 = refmodels.preprocess(img, size=224, resize="squash", norm="imagenet")
        np.save(os.path.join(a.out, f"{name}_u8.npy"), u8.astype(np.uint8))
    u8 = np.load(os.path.join(a.out, "chelsea_u8.npy"))
    mean = np.array(refmodels.IMAGENET_MEAN, np.float32)
    std = np.array(refmodels.IMAGENET_STD, np.float32)
    x = ((u8.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None].copy()
    res = reference.compute(model, torch.from_numpy(x), layer, CLASS)

    A = torch.from_numpy(res["activation"]).double()
    g = torch.from_numpy(res["activation_grad"]).double()
    s = A.sum(dim=(1, 2))
    alpha = g**2 / (2 * g**2 + s[:, None, None] * g**3 + 1e-7)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w = (alpha * g.clamp(min=0)).sum(dim=(1, 2))
    campp = (w[:, None, None] * A).sum(0).clamp(min=0).float().numpy()

    sal = res["saliency"]
    out = {
        "chelsea_logits": res["logits"],
        "chelsea_gradcam_weights": res["gradcam_weights"],
        "chelsea_gradcam_raw": res["gradcam_raw"],
        "chelsea_gradcampp_raw": campp,
        "chelsea_gradcam": res["gradcam"][::4, ::4],
        "chelsea_saliency_raw": sal[:, ::4, ::4],
        "chelsea_saliency": (res["saliency_maxabs"] / res["saliency_maxabs"].max())[::4, ::4],
    }
    for k, v in out.items():
        np.save(os.path.join(a.out, f"{k}.npy"), np.ascontiguousarray(v, dtype=np.float32))
    meta["score"] = float(res["score"])
    meta["top5"] = [int(i) for i in np.argsort(-res["probs"])[:5]]
    meta["gradcam_peak_yx"] = [int(i) for i in np.unravel_index(int(np.argmax(res["gradcam"])), (224, 224))]
    with open(os.path.join(a.out, "SOURCE.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
