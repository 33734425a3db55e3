"""gpusim: a cycle-approximate GPU memory-hierarchy simulator for attention kernels."""

from gpusim.errors import InputError
from gpusim.hardware import PRESETS, HardwareSpec, get_preset
from gpusim.problem import AttentionProblem, CopyProblem, GemmProblem
from gpusim.result import Result
from gpusim.simulate import simulate

__all__ = ["simulate", "HardwareSpec", "get_preset", "PRESETS", "AttentionProblem", "CopyProblem", "GemmProblem",
           "Result", "InputError"]
__version__ = "0.1.0"
