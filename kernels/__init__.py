"""Kernel programs, one module per algorithm (imported as gpusim.kernels).

Each module defines NAME, PROBLEM (the problem type it accepts), OPTIONS (an Option schema), a docstring
naming the paper it follows, and `build_plan(problem, hw, options) -> KernelPlan`. Kernels see only the op
API (gpusim.ops, gpusim.launch) and problem types, never the engine.
"""

from __future__ import annotations

from importlib import import_module

from gpusim.errors import InputError

_MODULES = {
    "copy": "copy_bench",
    "gemm": "gemm",
    "naive": "naive",
    "fa1": "fa1",
    "fa2": "fa2",
    "flash_decoding": "flash_decoding",
    "fa3": "fa3",
    "fa4": "fa4",
    "paged_decoding": "paged_decoding",
}
MICROBENCHMARKS = ("copy", "gemm")


def available() -> list[str]:
    """Kernel names whose modules exist in this build."""
    names = []
    for name, module in _MODULES.items():
        try:
            import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module}":
                raise
            continue
        names.append(name)
    return names


def attention_kernels() -> list[str]:
    return [name for name in available() if name not in MICROBENCHMARKS]


def get_kernel(name: str):
    if name not in _MODULES:
        raise InputError(f"unknown kernel {name!r}; known: {', '.join(available())}")
    try:
        return import_module(f"{__name__}.{_MODULES[name]}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{_MODULES[name]}":
            raise InputError(f"kernel {name!r} is not built yet; available: {', '.join(available())}") from None
        raise
