"""One instruction-set level for both sides of a benchmark (issue 13, "every CPU").

`apply(level)` must run before torch is imported: PyTorch reads ATEN_CPU_CAPABILITY (its own
vectorised kernels) and oneDNN reads ONEDNN_MAX_CPU_ISA (convolutions, matrix products) when
they load. convscope reads CONVSCOPE_SIMD; setting it in os.environ caps every `convscope`
subprocess the script starts.

  level     convscope            PyTorch
  best      (unset: the CPU's)   (unset: the CPU's)
  avx512    CONVSCOPE_SIMD=avx512 ATEN_CPU_CAPABILITY=avx512, ONEDNN_MAX_CPU_ISA=AVX512_CORE
  avx2      CONVSCOPE_SIMD=avx2  ATEN_CPU_CAPABILITY=avx2,   ONEDNN_MAX_CPU_ISA=AVX2
  portable  CONVSCOPE_SIMD=portable ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=SSE41

onnxruntime has no such switch: its figures are always at the CPU's best level.
"""
import os
import platform
import subprocess

LEVELS = ("best", "avx512", "avx2", "portable")

_TORCH = {
    "avx512": ("avx512", "AVX512_CORE"),
    "avx2": ("avx2", "AVX2"),
    "portable": ("default", "SSE41"),
}


def apply(level: str) -> None:
    if level not in LEVELS:
        raise SystemExit(f"unknown level {level!r}; use one of {', '.join(LEVELS)}")
    if level == "best":
        for k in ("CONVSCOPE_SIMD", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
            os.environ.pop(k, None)
        return
    os.environ["CONVSCOPE_SIMD"] = level
    aten, onednn = _TORCH[level]
    os.environ["ATEN_CPU_CAPABILITY"] = aten
    os.environ["ONEDNN_MAX_CPU_ISA"] = onednn


def describe() -> str:
    """The CPU model and the levels both sides run at (call after importing torch)."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [cpu, f"convscope level {os.environ.get('CONVSCOPE_SIMD', 'best')}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__} capability {torch.backends.cpu.get_cpu_capability()}"
                     f", oneDNN max ISA {os.environ.get('ONEDNN_MAX_CPU_ISA', 'default')}")
    except Exception:  # noqa: BLE001 - a description, never a failure
        pass
    return "; ".join(parts)


def convscope_level(exe: str) -> str:
    """The level `convscope bench --json` reports for the current environment."""
    out = subprocess.run([exe, "bench", "--model", "smile-cnn", "--runs", "1", "--json"],
                         check=True, capture_output=True, text=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1]).get("simd", "?")


def apply_from_argv(argv=None) -> str:
    """`apply` the value of a `--level L` (or `--level=L`) argument, before torch is imported
    by the calling script; returns the level ("best" when absent)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    level = "best"
    for i, a in enumerate(argv):
        if a == "--level" and i + 1 < len(argv):
            level = argv[i + 1]
        elif a.startswith("--level="):
            level = a.split("=", 1)[1]
    apply(level)
    return level
