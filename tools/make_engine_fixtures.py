#!/usr/bin/env python3
"""Golden fixtures for the engine: whole small networks run by PyTorch.

Writes, under tests/fixtures/engine/<case>/ (see tools/README.md for the file list):

  smile_cnn        the book's smile CNN (64x64x3 -> 1 logit), eval mode, batch 2
  smile_cnn_train  the same weights in train mode (dropout 0, BN momentum 0.1), batch 4,
                   BCE-with-logits loss, two Adam steps (lr 1e-3)
  zoo              a small net on an odd, non-square input [2, 3, 23, 19] that uses every
                   engine op (padding, strides, dilation, groups, depthwise, every activation,
                   max/avg pooling variants, squeeze-excite, residual add, concat, softmax)

Run from the repository root:
    /work/refenv/venv/bin/python tools/make_engine_fixtures.py

Everything is float32 and deterministic for the seeds below (CPU, one thread).
The script is self-contained: the SmileCNN class is copied from the reference kit
(/work/shared/tools/reference/refmodels.py) so that the project does not depend on it.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import sys
from collections import OrderedDict

import numpy as np
import safetensors
import torch
import torch.nn as nn
from safetensors.torch import save_file

SCRIPT = "tools/make_engine_fixtures.py"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "engine")

# fc1.weight of the smile CNN is 128 x 8192 (4 MB of f32). Its weights are stored in full,
# but its gradients and Adam-updated values are stored for every 8th output row only (16 full
# rows of 8192 inputs), which keeps the fixtures a few MB. The test takes the same rows.
SUBSAMPLE = {"classifier.fc1.weight": {"axis": 0, "start": 0, "step": 8}}

TOLERANCES = {
    "logits": 1e-4,
    "probs": 1e-4,
    "activations": 1e-3,
    "input_grad": 1e-3,
    "param_grads": 1e-3,
    "loss": 1e-5,
    "train_param_grads": 1e-3,
    "running_stats": 1e-5,
    "adam_params": 1e-5,
    "loss_step2": 5e-4,
    "adam_update_rel_l2": 3e-3,
    # loss_step2 and adam_update_rel_l2 sit about 10x above PyTorch's own float32-vs-float64
    # distance (4e-5 and 3e-4): the first Adam step moves all 1M fc1 weights by ~lr, which takes
    # the loss from 0.57 to 0.002, so step 2 runs in a saturated, noise-sensitive regime.
    "_note": "relative: max |engine - reference| / max |reference| per tensor, except "
             "adam_update_rel_l2 (see smile_train_case). adam_params applies to the engine's "
             "Adam fed with the reference gradients; end to end (engine gradients into engine "
             "Adam) a gradient element within float noise of Adam's eps can move its update by "
             "a sizeable part of lr (PyTorch float32 vs float64 differ by 2e-2 there), so the end-"
             "to-end update is compared as a whole by relative L2 norm",
}


# --------------------------------------------------------------------------- models
class SmileCNN(nn.Module):
    """Keras-book smile detector in NCHW (copied from refmodels.SmileCNN).

    Input Nx3x64x64 (x/255). Each conv is conv -> relu -> bn (Keras order), BN eps 1e-3.
    Flatten is over (C,H,W) = 32x16x16 = 8192. forward() returns the pre-sigmoid logit.
    """

    def __init__(self, dropout: float = 0.25, bn_momentum: float = 0.01):
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, eps=1e-3, momentum=bn_momentum)  # noqa: E731
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 16, 5, padding=2)), ("relu1", nn.ReLU()), ("bn1", bn(16)),
            ("conv2", nn.Conv2d(16, 16, 5, padding=2)), ("relu2", nn.ReLU()), ("bn2", bn(16)),
            ("pool1", nn.MaxPool2d(2)), ("drop1", nn.Dropout(dropout)),
            ("conv3", nn.Conv2d(16, 32, 3, padding=1)), ("relu3", nn.ReLU()), ("bn3", bn(32)),
            ("conv4", nn.Conv2d(32, 32, 3, padding=1)), ("relu4", nn.ReLU()), ("bn4", bn(32)),
            ("pool2", nn.MaxPool2d(2)), ("drop2", nn.Dropout(dropout)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(16 * 16 * 32, 128)), ("relu5", nn.ReLU()),
            ("fc2", nn.Linear(128, 1)),
        ]))

    def forward(self, x):
        return self.classifier(self.features(x))


class ConvBnAct(nn.Module):
    def __init__(self, conv: nn.Conv2d, act: nn.Module):
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(conv.out_channels, eps=1e-5, momentum=0.1)
        self.act = act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Global average pool -> 1x1 reduce -> ReLU -> 1x1 expand -> Sigmoid -> scale x."""

    def __init__(self, c: int, r: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c, r, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(r, c, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))
        return x * s  # [n, c, h, w] * [n, c, 1, 1]: broadcasting Mul


class Add(nn.Module):
    """Residual addition as a module, so that its output has a name (`residual`)."""

    def forward(self, a, b):
        return a + b


class Concat(nn.Module):
    """Channel concatenation as a module, so that its output has a name (`concat`)."""

    def forward(self, *xs):
        return torch.cat(xs, dim=1)


class Zoo(nn.Module):
    """Every engine op once, on an odd, non-square input [n, 3, 23, 19].

    Shapes (n = 2):
      stem.pad      ZeroPad2d (left 0, right 1, top 0, bottom 1)  -> [n, 3, 24, 20]
      stem          conv 3x3 stride 2 (no padding), BN, ReLU6       -> [n, 8, 11, 9]
      dilated       conv 3x3 dilation 2 padding 2, LeakyReLU(0.1)   -> [n, 8, 11, 9]
      grouped       conv (3,5) groups 2 padding (1,2), BN, SiLU     -> [n, 12, 11, 9]
      depthwise     conv 3x3 groups 12 padding 1, Hardswish         -> [n, 12, 11, 9]
      se            squeeze-excite, broadcasting Mul                -> [n, 12, 11, 9]
      project       conv 1x1 without bias, BN                       -> [n, 8, 11, 9]
      residual      project + dilated (Add)                         -> [n, 8, 11, 9]
      maxpool       MaxPool2d(3, 2, 1, ceil_mode=True)              -> [n, 8, 6, 5]
      avgpool       AvgPool2d(3, 2, 1, count_include_pad=False)     -> [n, 8, 6, 5]
      tanh          Tanh of residual
      avgpool_pad   AvgPool2d(3, 2, 1, count_include_pad=True)      -> [n, 8, 6, 5]
      concat        channel concat of the three pools               -> [n, 24, 6, 5]
      mix           conv 3x3 padding 1, BN, Hardsigmoid             -> [n, 16, 6, 5]
      gap, flatten  global average pool, flatten                    -> [n, 16]
      fc            Linear(16, 5)                                   -> logits [n, 5]
      probs         Softmax(dim=1)                                  -> [n, 5]
    """

    def __init__(self):
        super().__init__()
        self.stem_pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.stem = ConvBnAct(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU6())
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.dilated_act = nn.LeakyReLU(0.1)
        self.grouped = ConvBnAct(nn.Conv2d(8, 12, (3, 5), padding=(1, 2), groups=2), nn.SiLU())
        self.depthwise = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.depthwise_act = nn.Hardswish()
        self.se = SqueezeExcite(12, 4)
        self.project = nn.Conv2d(12, 8, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(8)
        self.residual = Add()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.avgpool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.tanh = nn.Tanh()
        self.avgpool_pad = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True)
        self.concat = Concat()
        self.mix = ConvBnAct(nn.Conv2d(24, 16, 3, padding=1), nn.Hardsigmoid())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 5)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        """Returns (logits, probs)."""
        x = self.stem(self.stem_pad(x))
        d = self.dilated_act(self.dilated(x))
        g = self.grouped(d)
        g = self.depthwise_act(self.depthwise(g))
        g = self.se(g)
        r = self.residual(self.project_bn(self.project(g)), d)
        cat = self.concat(self.maxpool(r), self.avgpool(r), self.avgpool_pad(self.tanh(r)))
        m = self.mix(cat)
        logits = self.fc(self.flatten(self.gap(m)))
        return logits, self.softmax(logits)


# --------------------------------------------------------------------------- helpers
@torch.no_grad()
def calibrate_and_perturb_bn(model: nn.Module, batch: torch.Tensor, gen: torch.Generator):
    """Running stats from a calibration batch, then perturbed, with random affine params.

    Gives eval-mode BN non-trivial statistics (not 0/1) of a sensible scale, so that every
    layer's output is neither saturated nor vanishing.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    moms = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: exactly the calibration batch's statistics
    model.train()
    model(batch)
    for bn, mom in zip(bns, moms):
        c = bn.num_features
        bn.momentum = mom
        bn.running_mean += 0.05 * torch.randn(c, generator=gen)
        bn.running_var *= torch.empty(c).uniform_(0.8, 1.25, generator=gen)
        bn.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=gen))
        bn.bias.copy_(torch.empty(c).uniform_(-0.2, 0.2, generator=gen))
    model.eval()


KINKS = {nn.ReLU: (0.0,), nn.ReLU6: (0.0, 6.0), nn.LeakyReLU: (0.0,), nn.Hardsigmoid: (-3.0, 3.0),
         nn.Hardswish: (-3.0, 3.0)}


@torch.no_grad()
def kink_margin(model: nn.Module, x: torch.Tensor) -> float:
    """Smallest distance of any piecewise activation's input from a kink, relative to that
    layer's largest input. An element within float noise of a kink switches its gradient on or
    off depending on rounding, which moves input and weight gradients by a whole term; inputs
    are chosen to keep this margin well above float32 noise (~1e-6)."""
    margins = []
    hooks = []
    for m in model.modules():
        kinks = next((k for cls, k in KINKS.items() if type(m) is cls), None)
        if kinks is None:
            continue

        def hook(_m, inp, _out, kinks=kinks):
            v = inp[0].double()
            scale = float(v.abs().max()) or 1.0
            margins.append(min(float((v - k).abs().min()) for k in kinks) / scale)
        hooks.append(m.register_forward_hook(hook))
    model(x)
    for h in hooks:
        h.remove()
    return min(margins)


def best_input(model: nn.Module, draw, candidates: int = 16) -> tuple[torch.Tensor, int, float]:
    """The best-conditioned of `candidates` inputs from `draw()` (largest kink margin)."""
    best = None
    for i in range(candidates):
        x = draw()
        margin = kink_margin(model, x)
        if best is None or margin > best[2]:
            best = (x, i, margin)
    return best


def subsample(name: str, t: torch.Tensor) -> torch.Tensor:
    s = SUBSAMPLE.get(name)
    if s is None:
        return t
    idx = torch.arange(s["start"], t.shape[s["axis"]], s["step"])
    return t.index_select(s["axis"], idx)


def f32_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict as float32 (num_batches_tracked is an int64 counter the engine does not use)."""
    return f32_state({k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")})


def save_npy(path: str, t) -> None:
    a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t
    np.save(path, np.ascontiguousarray(a, dtype=np.float32))


def capture(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Forward hooks recording the outputs of the named modules."""
    acts: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for n in names:
        modules[n].register_forward_hook(lambda _m, _i, out, n=n: acts.__setitem__(n, out.detach().clone()))
    return acts


def versions() -> dict:
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def write_meta(case_dir: str, meta: dict) -> None:
    full = {"script": SCRIPT, "command": f"/work/refenv/venv/bin/python {SCRIPT}", "versions": versions()}
    full.update(meta)
    with open(os.path.join(case_dir, "meta.json"), "w") as f:
        json.dump(full, f, indent=2, sort_keys=True)
        f.write("\n")


def trainable_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: subsample(n, p.grad) for n, p in model.named_parameters()}


# --------------------------------------------------------------------------- eval cases
def eval_results(model: nn.Module, x: torch.Tensor, act_names: list[str], target: int,
                 projections: list[torch.Tensor]) -> dict:
    """Outputs, activations, input gradient and parameter gradients in the model's precision."""
    dtype = next(model.parameters()).dtype
    model.eval()
    acts = capture(model, act_names)
    xg = x.to(dtype).clone().requires_grad_(True)
    out = model(xg)
    outputs = list(out) if isinstance(out, tuple) else [out]
    logits = outputs[0]
    # d(sum over the batch of logits[:, target]) / d input; batch items are independent in eval.
    (gx,) = torch.autograd.grad(logits[:, target].sum(), xg, retain_graph=True)
    # d(sum(logits * R) [+ sum(probs * Rp)]) / d params, with fixed random projections.
    model.zero_grad()
    scalar = sum((o * r.to(dtype)).sum() for o, r in zip(outputs, projections))
    scalar.backward()
    return {
        "outputs": [o.detach().clone() for o in outputs],
        "acts": dict(acts),
        "input_grad": gx.detach().clone(),
        "param_grads": {n: p.grad.detach().clone() for n, p in model.named_parameters()},
    }


def eval_case(name: str, model: nn.Module, x: torch.Tensor, act_names: list[str], target: int,
              seed: int, gen: torch.Generator, description: str, extra_meta: dict) -> None:
    """Forward, input gradient of one class logit, parameter gradients of a projection.

    The same is computed in float64 from the same float32 weights; the float32 results' distance
    from it is recorded in meta.json ("float32_vs_float64"), the headroom under the tolerances.
    """
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model.eval()
    save_file(model_state(model), os.path.join(d, "weights.safetensors"))
    save_npy(os.path.join(d, "input.npy"), x)
    with torch.no_grad():
        out = model(x)
    outs = out if isinstance(out, tuple) else (out,)
    n_outputs = len(outs)
    projections = [torch.randn(o.shape, generator=gen) for o in outs]

    r32 = eval_results(copy.deepcopy(model), x, act_names, target, projections)
    r64 = eval_results(copy.deepcopy(model).double(), x, act_names, target, projections)
    logits = r32["outputs"][0]
    probs = r32["outputs"][1] if n_outputs > 1 else None
    acts = r32["acts"]
    save_npy(os.path.join(d, "logits.npy"), logits)
    save_npy(os.path.join(d, "grad_projection.npy"), projections[0])
    if probs is not None:
        save_npy(os.path.join(d, "probs.npy"), probs)
        save_npy(os.path.join(d, "grad_projection_probs.npy"), projections[1])
    for n, a in acts.items():
        save_npy(os.path.join(d, f"act_{n}.npy"), a)
    save_npy(os.path.join(d, "input_grad.npy"), r32["input_grad"])
    grads = {n: subsample(n, g) for n, g in r32["param_grads"].items()}
    save_file(f32_state(grads), os.path.join(d, "param_grads.safetensors"))
    headroom = {
        "logits": rel_diff(logits, r64["outputs"][0]),
        "activations": max_rel(acts, r64["acts"]),
        "input_grad": rel_diff(r32["input_grad"], r64["input_grad"]),
        "param_grads": max_rel(r32["param_grads"], r64["param_grads"]),
    }
    if probs is not None:
        headroom["probs"] = rel_diff(probs, r64["outputs"][1])

    meta = {
        "case": name,
        "description": description,
        "mode": "eval",
        "seed": seed,
        "input_shape": list(x.shape),
        "logits_shape": list(logits.shape),
        "target_class": target,
        "input_grad_seed": f"d(sum_n logits[n, {target}]) / d input",
        "param_grad_scalar": "sum(logits * grad_projection)"
        + (" + sum(probs * grad_projection_probs)" if probs is not None else ""),
        "activations": {n: list(a.shape) for n, a in acts.items()},
        "subsampled": {k: v for k, v in SUBSAMPLE.items() if k in dict(model.named_parameters())},
        "tolerances": TOLERANCES,
        "logits_max_abs": float(logits.abs().max()),
        "float32_vs_float64": headroom,
    }
    meta.update(extra_meta)
    write_meta(d, meta)


# --------------------------------------------------------------------------- train case
def run_train(weights: dict[str, torch.Tensor], x: torch.Tensor, targets: torch.Tensor,
              dtype: torch.dtype, adam: dict) -> dict:
    """Two training steps (forward -> loss -> backward -> Adam) in the given precision."""
    model = SmileCNN(dropout=0.0, bn_momentum=0.1).to(dtype)
    model.load_state_dict(weights, strict=False)  # num_batches_tracked stays at its default
    model.train()
    x, targets = x.to(dtype), targets.to(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=adam["lr"], betas=(adam["beta1"], adam["beta2"]),
                           eps=adam["eps"], weight_decay=adam["weight_decay"])
    loss_fn = nn.BCEWithLogitsLoss(reduction="mean")
    bn_names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]

    def running_stats() -> dict[str, torch.Tensor]:
        out = {}
        for bn in bn_names:
            out[f"{bn}.running_mean"] = model.get_submodule(bn).running_mean.detach().clone()
            out[f"{bn}.running_var"] = model.get_submodule(bn).running_var.detach().clone()
        return out

    res: dict = {"losses": []}
    for step in (1, 2):
        opt.zero_grad()
        logits = model(x)
        logits.retain_grad()
        loss = loss_fn(logits, targets)
        loss.backward()
        res["losses"].append(loss.detach().clone())
        if step == 1:
            res["logits_step1"] = logits.detach().clone()
            res["dlogits_step1"] = logits.grad.detach().clone()
            res["grads_step1"] = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
            res["stats_step1"] = running_stats()
        else:
            res["grads_step2"] = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        opt.step()
    res["stats_step2"] = running_stats()
    res["params_step2"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    return res


def rel_diff(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref| in float64, the same measure the Rust test uses."""
    a, ref = a.double(), ref.double()
    scale = float(ref.abs().max())
    return float((a - ref).abs().max()) / (scale if scale > 0 else 1.0)


def update_rel_l2(after: dict, ref_after: dict, before: dict) -> float:
    """||(after - before) - (ref_after - before)|| / ||ref_after - before|| over all params."""
    num = sum(float(((after[k].double() - ref_after[k].double()) ** 2).sum()) for k in ref_after)
    den = sum(float(((ref_after[k].double() - before[k].double()) ** 2).sum()) for k in ref_after)
    return (num / den) ** 0.5


def max_rel(a: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    return max(rel_diff(a[k], ref[k]) for k in ref)


def smile_train_case(weights: dict[str, torch.Tensor], seed: int, gen: torch.Generator) -> None:
    """Train mode: batch statistics (momentum 0.1), BCE-with-logits, two Adam steps.

    The same two steps are also run in float64 from the same float32 weights; how far the
    float32 results are from those is recorded in meta.json ("float32_vs_float64"), the
    headroom under which the engine's tolerances sit.
    """
    name = "smile_cnn_train"
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    probe = SmileCNN(dropout=0.0, bn_momentum=0.1)
    probe.load_state_dict(weights, strict=False)
    probe.train()  # margins under batch statistics; this copy's running stats are thrown away
    x, chosen, margin = best_input(probe, lambda: torch.rand(4, 3, 64, 64, generator=gen))
    targets = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    adam = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
            "amsgrad": False, "bias_correction": True}
    r32 = run_train(weights, x, targets, torch.float32, adam)
    r64 = run_train(weights, x, targets, torch.float64, adam)

    save_npy(os.path.join(d, "input.npy"), x)
    save_npy(os.path.join(d, "targets.npy"), targets)
    save_npy(os.path.join(d, "loss.npy"), torch.stack(r32["losses"]))
    save_npy(os.path.join(d, "logits_step1.npy"), r32["logits_step1"])
    save_npy(os.path.join(d, "dlogits_step1.npy"), r32["dlogits_step1"])
    sub = lambda ts: {n: subsample(n, t) for n, t in ts.items()}  # noqa: E731
    save_file(f32_state(sub(r32["grads_step1"])), os.path.join(d, "param_grads_step1.safetensors"))
    save_file(f32_state(r32["stats_step1"]), os.path.join(d, "running_stats_step1.safetensors"))
    save_file(f32_state(r32["stats_step2"]), os.path.join(d, "running_stats_step2.safetensors"))
    save_file(f32_state(sub(r32["grads_step2"])), os.path.join(d, "param_grads_step2.safetensors"))
    save_file(f32_state(sub(r32["params_step2"])), os.path.join(d, "params_after_adam2.safetensors"))

    # Adam's first steps are sign-like (m / sqrt(v) = g / |g|), so a gradient element within
    # float noise of zero could flip an update; this records the smallest non-zero one.
    min_rel_grad = {}
    for n, g in r32["grads_step1"].items():
        g = g.abs()
        nz = g[g > 0]
        min_rel_grad[n] = float(nz.min() / g.max()) if nz.numel() else 0.0

    write_meta(d, {
        "case": name,
        "description": "smile CNN in train mode: dropout p=0, BN batch statistics (biased variance "
                       "to normalise, unbiased for the running update) with momentum 0.1, "
                       "BCE-with-logits (mean) against targets.npy, two Adam steps; each step is "
                       "forward (updating running stats) -> loss -> backward -> Adam",
        "mode": "train",
        "seed": seed,
        "initial_weights": "../smile_cnn/weights.safetensors (running stats included)",
        "input_shape": list(x.shape),
        "input_choice": {"candidates": 16, "chosen": chosen, "kink_margin": margin},
        "targets": targets.flatten().tolist(),
        "loss": "BCEWithLogitsLoss(reduction='mean')",
        "losses": [float(v) for v in r32["losses"]],
        "bn": {"eps": 1e-3, "momentum": 0.1},
        "dropout": 0.0,
        "adam": adam,
        "files": {
            "loss.npy": "[loss at step 1, loss at step 2] (each before that step's update)",
            "logits_step1.npy": "train-mode logits at step 1",
            "dlogits_step1.npy": "d loss / d logits at step 1",
            "param_grads_step1.safetensors": "d loss / d params at step 1 (initial params)",
            "param_grads_step2.safetensors": "d loss / d params at step 2 (params after one Adam "
                                             "step); with step 1's they drive the Adam-only check",
            "running_stats_step1.safetensors": "BN running stats after the first forward",
            "running_stats_step2.safetensors": "BN running stats after the second forward",
            "params_after_adam2.safetensors": "trainable params after the second Adam step",
        },
        "float32_vs_float64": {
            "loss_step1": rel_diff(r32["losses"][0], r64["losses"][0]),
            "param_grads_step1": max_rel(r32["grads_step1"], r64["grads_step1"]),
            "running_stats": max(max_rel(r32["stats_step1"], r64["stats_step1"]),
                                 max_rel(r32["stats_step2"], r64["stats_step2"])),
            "loss_step2": rel_diff(r32["losses"][1], r64["losses"][1]),
            "adam_params": max_rel(r32["params_step2"], r64["params_step2"]),
            "adam_update_rel_l2": update_rel_l2(r32["params_step2"], r64["params_step2"], weights),
            "adam_params_per_tensor": {n: rel_diff(r32["params_step2"][n], t)
                                       for n, t in r64["params_step2"].items()},
        },
        "min_nonzero_grad_over_max_step1": min_rel_grad,
        "subsampled": SUBSAMPLE,
        "tolerances": TOLERANCES,
    })


# --------------------------------------------------------------------------- main
def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)

    # (a) smile CNN, eval, batch 2
    seed = 20240601
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    smile = SmileCNN()
    calibrate_and_perturb_bn(smile, torch.rand(8, 3, 64, 64, generator=gen), gen)
    x, chosen, margin = best_input(smile, lambda: torch.rand(2, 3, 64, 64, generator=gen))
    eval_case("smile_cnn", smile, x, ["features.bn2", "features.pool1", "features.bn4", "classifier.relu5"],
              target=0, seed=seed, gen=gen,
              description="smile CNN (conv->relu->bn x4, 2 max pools, fc 8192->128->1), eval mode, "
                          "BN eps 1e-3, dropout 0.25 (identity in eval); input uniform [0, 1)",
              extra_meta={"bn": {"eps": 1e-3, "momentum": 0.01}, "dropout": 0.25,
                          "input_choice": {"candidates": 16, "chosen": chosen, "kink_margin": margin}})

    # (b) smile CNN, train mode, from the same weights
    smile_train_case(model_state(smile), seed=seed + 2, gen=torch.Generator().manual_seed(seed + 2))

    # (c) zoo, eval, batch 2
    seed = 20240602
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    zoo = Zoo()
    calibrate_and_perturb_bn(zoo, torch.randn(8, 3, 23, 19, generator=gen), gen)
    x, chosen, margin = best_input(zoo, lambda: torch.randn(2, 3, 23, 19, generator=gen))
    eval_case("zoo", zoo, x,
              ["stem.act", "dilated_act", "grouped.act", "depthwise_act", "se", "residual",
               "maxpool", "avgpool", "avgpool_pad", "concat", "mix.act", "gap"],
              target=3, seed=seed, gen=gen,
              description=Zoo.__doc__.strip().splitlines()[0] + " (see Zoo in the script for the layers)",
              extra_meta={"bn": {"eps": 1e-5},
                          "input_choice": {"candidates": 16, "chosen": chosen, "kink_margin": margin}})
    print(f"fixtures written under {OUT}")


if __name__ == "__main__":
    sys.exit(main())
