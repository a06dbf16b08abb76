#!/usr/bin/env python3
"""Makes the model-zoo parity fixtures: torchvision architectures with seeded random weights,
exported to ONNX, with PyTorch and onnxruntime reference outputs. Too big to commit (VGG16 alone
is 528 MB), so they go to a cache directory that tests/onnx_zoo_parity.rs finds or fills.

    /work/refenv/venv/bin/python tools/make_zoo_fixtures.py [--out DIR] [--models a,b,..]

DIR defaults to $CONVSCOPE_MODEL_ZOO, else target/model-zoo under the repository root.
Models: resnet50, vgg16, mobilenet_v2, squeezenet1_1 (default: all, in that order).
Needs torch, torchvision, onnx, onnxruntime and numpy (the reference env of
/work/shared/tools/reference/setup_ref_env.sh has them).

Weights: torch.manual_seed(0), torchvision's own init, then BatchNorm running statistics
re-estimated on 4 batches of 16 N(0, 1) images (seed 1), cumulative average; without that a
random-init network in eval mode has badly scaled activations (MobileNetV2 logits ~1e-9).
This is the reference kit's refmodels.build_torchvision, copied so that tools/ is
self-contained.

ONNX export: the legacy TorchScript exporter, opset 13, training=PRESERVE with the model in
eval() (BatchNormalization nodes kept, PyTorch parameter names kept), then every node whose
inputs are all constant folded into an initializer (the reference kit's export_models.py).
Input "input" [N, 3, 224, 224] with a dynamic N, output "logits".

Files per model NAME (written under a temporary name and renamed, meta last, so a half-made
model is never taken for a finished one):
  NAME.onnx                  the model
  NAME.input.npy             x, [1, 3, 224, 224] float32, N(0, 1) with seed 123
  NAME.logits_torch.npy      PyTorch logits [1, 1000]
  NAME.logits_ort.npy        onnxruntime logits [1, 1000]
  NAME.act.npy               PyTorch output of module LAYER, [1, C, h, w]
  NAME.grad.npy              PyTorch d logits[0, CLASS] / d x, [1, 3, 224, 224]
  NAME.act_grad.npy          PyTorch d logits[0, CLASS] / d act, [1, C, h, w]
  NAME.gradcam_raw.npy       relu(sum_k alpha_k A_k), alpha_k = mean_ij d logit / d A_k, [h, w]
                             (the reference kit's reference.py definition)
  NAME.gradcampp_raw.npy     Grad-CAM++ (pytorch-grad-cam's closed form, as
                             tools/make_explain_fixtures.py), [h, w]
  NAME.saliency.npy          max_c |d logit / d x| / its max, [224, 224]
  NAME.json                  layer (module and ONNX tensor name), class, top-5 (PyTorch and
                             onnxruntime), sizes, onnxruntime-vs-PyTorch differences, versions
CLASS is PyTorch's top-1 class for x; LAYER is the reference kit's default Grad-CAM layer.

Gradient sensitivity (NAME.json grad_sensitivity_*): see gradient_sensitivity(). Measured
with this script (torch 2.15 CPU): ResNet50 and VGG16 move by several 1e-2 under a 1e-6 nudge
(PyTorch float32 against float64 on ResNet50: 3.8e-2), SqueezeNet by far less than 1e-3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> module whose output is the compared activation (the last conv block's output)
LAYERS = {
    "resnet50": "layer4",
    "vgg16": "features.29",
    "mobilenet_v2": "features.18",
    "squeezenet1_1": "features.12",
}


def default_out() -> str:
    return os.environ.get("CONVSCOPE_MODEL_ZOO") or os.path.join(ROOT, "target", "model-zoo")


def calibrate_bn(model, seed: int = 0, batches: int = 4, batch: int = 16, size: int = 224):
    import torch
    import torch.nn as nn

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    g = torch.Generator().manual_seed(seed + 1)
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch, 3, size, size, generator=g))
    for bn, mom in zip(bns, saved):
        bn.momentum = mom
    return model.eval()


def build(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    m = getattr(torchvision.models, name)(weights=None)
    calibrate_bn(m, seed=0)
    for mod in m.modules():  # a hooked activation must not be overwritten by an in-place op
        if hasattr(mod, "inplace"):
            mod.inplace = False
    return m.eval()


def fold_constants(model):
    """Folds every node whose inputs are all constant into an initializer named after its
    output (ONNX reference evaluator); drops Constant/Identity nodes and the exporter's Pad
    arithmetic."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    const = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    keep = []
    opset = list(model.opset_import)
    for n in g.node:
        if n.op_type == "Constant":
            t = [a for a in n.attribute if a.name == "value"]
            if t:
                const[n.output[0]] = numpy_helper.to_array(t[0].t)
                continue
        if n.op_type not in ("Shape", "Size") and n.input and all((i == "" or i in const) for i in n.input):
            ins = [i for i in n.input if i]
            sub = helper.make_graph(
                [n], "f",
                [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(const[i].dtype), const[i].shape) for i in ins],
                [helper.make_empty_tensor_value_info(o) for o in n.output])
            outs = ReferenceEvaluator(helper.make_model(sub, opset_imports=opset)).run(None, {i: const[i] for i in ins})
            for o, v in zip(n.output, outs):
                const[o] = np.asarray(v)
            continue
        keep.append(n)
    for n in keep:  # Pad(x, pads, constant_value=[0.]) -> Pad(x, pads): the value defaults to 0
        if n.op_type == "Pad" and len(n.input) == 3 and n.input[2] in const and not np.any(const[n.input[2]]):
            del n.input[2]
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    for k, v in const.items():
        if k in used:
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(v), k))
    return model


def onnx_module_last_node(nodes, module_name: str):
    """Last ONNX node (graph order) inside a PyTorch module's scope, for the legacy exporter's
    scope names: layer4.2.relu -> /layer4/layer4.2/relu/."""
    comps = []
    for p in module_name.split("."):
        comps.append(f"{comps[-1]}.{p}" if (p.isdigit() and comps) else p)
    scope = "/" + "/".join(comps) + "/"
    inside = [n for n in nodes if n.name.startswith(scope)]
    if not inside:
        raise KeyError(f"no ONNX node in the scope of module {module_name!r} ({scope})")
    return inside[-1]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def top5(logits: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-logits[0], kind="stable")[:5]]


def gradient_sensitivity(m, x, cls: int, grad: np.ndarray, draws: int = 3) -> tuple[float, float]:
    """How much PyTorch's own float32 input gradient moves when x is nudged by float32-level
    noise (N(0, 1) * 1e-6 * max |x|, seeds 1000..): (max relative, relative L2) over the
    draws. A ReLU network's input gradient is piecewise constant, and with random weights
    millions of pre-activations sit within 1e-7 (relative) of a kink, so any float32
    implementation flips some of them: this is the floor any implementation's gradient can be
    held to, and the test's gradient tolerance is max(1e-3, this)."""
    import torch

    worst_max, worst_l2 = 0.0, 0.0
    for k in range(draws):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1000 + k))
        xk = (x + noise * 1e-6 * x.abs().max()).requires_grad_(True)
        with torch.enable_grad():
            m(xk)[0, cls].backward()
        g = xk.grad.numpy().astype(np.float64)
        ref = grad.astype(np.float64)
        worst_max = max(worst_max, float(np.abs(g - ref).max() / np.abs(ref).max()))
        worst_l2 = max(worst_l2, float(np.linalg.norm(g - ref) / np.linalg.norm(ref)))
    return worst_max, worst_l2


def save_npy(path: str, arr: np.ndarray) -> None:
    tmp = path + ".tmp.npy"
    np.save(tmp, np.ascontiguousarray(arr, dtype=np.float32))
    os.replace(tmp, path)


def make(name: str, out: str) -> dict:
    import onnx
    import onnxruntime as ort
    import torch
    import torchvision

    t0 = time.time()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    m = build(name)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(123))
    layer = LAYERS[name]

    # PyTorch: logits, the layer's activation, d logits[class] / d x.
    store = {}
    module = dict(m.named_modules())[layer]

    def keep(_m, _i, out):  # returns None: a forward hook's return value would replace the output
        if "act" not in store:
            store["act"] = out.detach().clone()
            out.register_hook(lambda g: store.setdefault("act_grad", g.detach().clone()))

    hook = module.register_forward_hook(keep)
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = m(xg)
    hook.remove()
    logits_pt = logits.detach().numpy()
    cls = int(logits_pt[0].argmax())
    logits[0, cls].backward()
    assert xg.grad is not None, "no input gradient"
    grad = xg.grad.numpy()
    act = store["act"].numpy()
    act_grad = store["act_grad"].numpy()
    sens_max, sens_l2 = gradient_sensitivity(m, x, cls, grad)
    a64, g64 = act[0].astype(np.float64), act_grad[0].astype(np.float64)  # (C, h, w)
    gradcam_raw = np.maximum((g64.mean(axis=(1, 2))[:, None, None] * a64).sum(0), 0.0)
    s_k = a64.sum(axis=(1, 2))[:, None, None]
    alpha = g64**2 / (2 * g64**2 + s_k * g64**3 + 1e-7)
    alpha = np.where(g64 != 0, alpha, 0.0)
    w_pp = (alpha * np.maximum(g64, 0.0)).sum(axis=(1, 2))
    gradcampp_raw = np.maximum((w_pp[:, None, None] * a64).sum(0), 0.0)
    sal = np.abs(grad[0]).max(axis=0)
    saliency = sal / max(float(sal.max()), 1e-30)

    onnx_path = os.path.join(out, f"{name}.onnx")
    tmp_onnx = onnx_path + ".tmp"
    torch.onnx.export(
        m, (x,), tmp_onnx, dynamo=False, opset_version=13,
        training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
    )
    proto = fold_constants(onnx.load(tmp_onnx))
    onnx.checker.check_model(proto)
    tensor = onnx_module_last_node(list(proto.graph.node), layer).output[0]
    onnx.save(proto, tmp_onnx)

    # onnxruntime: logits and the same tensor as an extra output.
    with_act = onnx.ModelProto()
    with_act.CopyFrom(proto)
    with_act.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    sess = ort.InferenceSession(with_act.SerializeToString(), providers=["CPUExecutionProvider"])
    logits_ort, act_ort = sess.run(None, {"input": x.numpy()})
    del with_act, sess

    save_npy(os.path.join(out, f"{name}.input.npy"), x.numpy())
    save_npy(os.path.join(out, f"{name}.logits_torch.npy"), logits_pt)
    save_npy(os.path.join(out, f"{name}.logits_ort.npy"), logits_ort)
    save_npy(os.path.join(out, f"{name}.act.npy"), act)
    save_npy(os.path.join(out, f"{name}.grad.npy"), grad)
    save_npy(os.path.join(out, f"{name}.act_grad.npy"), act_grad)
    save_npy(os.path.join(out, f"{name}.gradcam_raw.npy"), gradcam_raw)
    save_npy(os.path.join(out, f"{name}.gradcampp_raw.npy"), gradcampp_raw)
    save_npy(os.path.join(out, f"{name}.saliency.npy"), saliency)
    os.replace(tmp_onnx, onnx_path)
    info = {
        "model": name,
        "format": 2,
        "script": "tools/make_zoo_fixtures.py",
        "weights": "torch.manual_seed(0), torchvision init, BN stats calibrated on 4x16 N(0,1) images (seed 1)",
        "input_seed": 123,
        "layer": layer,
        "layer_onnx_tensor": tensor,
        "act_shape": list(act.shape),
        "class": cls,
        "top5_torch": top5(logits_pt),
        "top5_ort": top5(logits_ort),
        "logits_max_abs": float(np.abs(logits_pt).max()),
        "ort_vs_torch_logits_rel": rel(logits_ort, logits_pt),
        "ort_vs_torch_act_rel": rel(act_ort, act),
        "grad_sensitivity_max_rel": sens_max,
        "grad_sensitivity_rel_l2": sens_l2,
        "onnx_bytes": os.path.getsize(onnx_path),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                     "numpy": np.__version__, "python": sys.version.split()[0]},
        "seconds": round(time.time() - t0, 1),
    }
    meta = os.path.join(out, f"{name}.json")
    with open(meta + ".tmp", "w") as f:
        json.dump(info, f, indent=1)
    os.replace(meta + ".tmp", meta)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=default_out())
    ap.add_argument("--models", default=",".join(LAYERS))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for name in a.models.split(","):
        if name not in LAYERS:
            sys.exit(f"unknown model {name!r}; known: {', '.join(LAYERS)}")
        info = make(name, a.out)
        print(f"{name}: {info['onnx_bytes'] / 1e6:.0f} MB, class {info['class']}, "
              f"ort vs torch {info['ort_vs_torch_logits_rel']:.1e}, {info['seconds']} s -> {a.out}", flush=True)


if __name__ == "__main__":
    main()
