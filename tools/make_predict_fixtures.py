"""Reference fixtures for `convscope predict` (tests/predict_*.rs).

Writes tests/fixtures/predict/:
- chelsea_pil224.npy   uint8 [224,224,3]: PIL `resize((224, 224), BILINEAR)` of chelsea.png
- rocket_pil31x47.npy  uint8 [47,31,3]:   PIL bilinear downscale by non-integer factors
- coffee_patch_up.npy  uint8 [11,16,3]:   the 7x5 patch coffee.png[100:105, 100:107] upscaled
- coffee_patch_up_bicubic.npy uint8 [11,16,3]: the same patch upscaled with PIL's BICUBIC
- rocket_bicubic31x47.npy uint8 [47,31,3]: PIL bicubic downscale by non-integer factors
- chelsea_swin_t.npy   uint8 [224,224,3]: torchvision's swin_t evaluation resize and crop
                       (`Resize(232, BICUBIC)`, `CenterCrop(224)`) on the PIL image
- chelsea_inception_v3.npy uint8 [299,299,3]: inception_v3's (`Resize(342)`, `CenterCrop(299)`)
- VERSIONS.txt
and prints onnxruntime's top-3 of efficientnet_lite0.onnx for the sample photos with the
reference preprocessing (PIL bilinear 224x224 squash, x/255, ImageNet mean/std).

Run: /work/refenv/venv/bin/python tools/make_predict_fixtures.py  (from the repository root,
with ../shared beside it).
"""
from pathlib import Path

import numpy as np
import onnxruntime as ort
import PIL
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "tests" / "fixtures" / "predict"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def rgb(name):
    return Image.open(SHARED / "images" / name).convert("RGB")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "chelsea_pil224.npy", np.asarray(rgb("chelsea.png").resize((224, 224), Image.BILINEAR)))
    np.save(OUT / "rocket_pil31x47.npy", np.asarray(rgb("rocket.png").resize((31, 47), Image.BILINEAR)))
    patch = rgb("coffee.png").crop((100, 100, 107, 105))
    np.save(OUT / "coffee_patch_up.npy", np.asarray(patch.resize((16, 11), Image.BILINEAR)))
    np.save(OUT / "coffee_patch_up_bicubic.npy", np.asarray(patch.resize((16, 11), Image.BICUBIC)))
    np.save(OUT / "rocket_bicubic31x47.npy", np.asarray(rgb("rocket.png").resize((31, 47), Image.BICUBIC)))
    from torchvision import transforms as T
    for name, resize, crop, interp in (("swin_t", 232, 224, T.InterpolationMode.BICUBIC),
                                       ("inception_v3", 342, 299, T.InterpolationMode.BILINEAR)):
        t = T.Compose([T.Resize(resize, interpolation=interp), T.CenterCrop(crop)])
        np.save(OUT / f"chelsea_{name}.npy", np.asarray(t(rgb("chelsea.png"))))
    (OUT / "VERSIONS.txt").write_text(
        f"made by tools/make_predict_fixtures.py with Pillow {PIL.__version__}, numpy {np.__version__}, "
        f"onnxruntime {ort.__version__}\n"
    )
    sess = ort.InferenceSession(str(SHARED / "models" / "efficientnet_lite0.onnx"))
    labels = (SHARED / "models" / "imagenet_classes.txt").read_text().splitlines()
    for name in ["chelsea.png", "coffee.png", "rocket.png"]:
        x = np.asarray(rgb(name).resize((224, 224), Image.BILINEAR), np.float32) / 255.0
        x = ((x - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
        logits = sess.run(None, {"input": x})[0][0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = np.argsort(-p)[:3]
        print(name, [(int(i), labels[i], round(float(p[i]), 4)) for i in top])


if __name__ == "__main__":
    main()
