"""Hardware fit: what a job or deployment needs from the worker that runs it.

A worker's hardware is what Ray placed it on: its share of a GPU (``num_gpus``, fractional for small
models), the GPU's model name and memory (detected with ``nvidia-smi`` or declared by the provider
with ``ciro provider join --gpu-model/--gpu-memory-gb``). Whether onnxruntime then runs on the GPU
depends on onnxruntime-gpu being installed there (``execution_providers`` in the worker's info).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ciro import JOB_OPTIONS, InputError

__all__ = ["FIT_OPTIONS", "Fit"]

#: Job options (and deployment settings) that constrain placement.
FIT_OPTIONS = ("gpu", "gpu_memory_gb", "gpu_model", "cpu_only")


def _flag(name: str, value: Any) -> bool:
    flag: bool = JOB_OPTIONS["cpu_only"].parse(name, value)  # the job options' one boolean parser
    return flag


@dataclass(frozen=True)
class Fit:
    """Hardware a job needs. The default needs nothing: any worker fits."""

    #: A share of a GPU.
    gpu: bool = False
    #: At least this much GPU memory in the worker's share (GB; a half GPU of 80 GB holds 40).
    gpu_memory_gb: float = 0.0
    #: The GPU's model name contains this (case-insensitive), e.g. "H100".
    gpu_model: str | None = None
    #: No GPU: keep GPUs for the jobs that need them.
    cpu_only: bool = False

    def __post_init__(self) -> None:
        if self.gpu_memory_gb < 0:
            raise InputError(f"gpu_memory_gb must be >= 0, not {self.gpu_memory_gb}.")
        if self.cpu_only and self.needs_gpu:
            raise InputError("cpu_only cannot be combined with gpu, gpu_memory_gb or gpu_model. Drop one of them.")

    @property
    def needs_gpu(self) -> bool:
        return self.gpu or self.gpu_memory_gb > 0 or bool(self.gpu_model)

    @property
    def any(self) -> bool:
        """True when every worker fits."""
        return not (self.needs_gpu or self.cpu_only)

    @classmethod
    def of(cls, options: Mapping[str, Any] | None) -> Fit:
        """The fit a job's options (or a deployment's settings) ask for. ``gpu`` set to a string such as "H100"
        is a preference (the SDK's ``gpu_preference``), not a requirement: it does not constrain which workers fit
        (the scheduler picks a matching free GPU first, ``scheduler.gpu_preference``); ``gpu_model`` is the
        requirement."""
        o = options or {}
        gpu = o.get("gpu")
        try:
            memory = float(o.get("gpu_memory_gb") or 0.0)
        except (TypeError, ValueError):
            raise InputError(f"Option 'gpu_memory_gb' must be a number of GB, not {o.get('gpu_memory_gb')!r}."
                             ) from None
        model = o.get("gpu_model")
        if model is not None and not isinstance(model, str):
            raise InputError(f"Option 'gpu_model' must be a GPU model name such as 'H100', not {model!r}.")
        return cls(gpu=gpu is True or (isinstance(gpu, str) and gpu.lower() in {"true", "1", "yes"}),
                   gpu_memory_gb=memory, gpu_model=model or None,
                   cpu_only=_flag("cpu_only", o["cpu_only"]) if o.get("cpu_only") is not None else False)

    def merge(self, other: Fit) -> Fit:
        """Both requirements at once (a job's on top of its deployment's)."""
        if self.gpu_model and other.gpu_model and self.gpu_model.lower() != other.gpu_model.lower():
            raise InputError(f"The job asks for GPU model {other.gpu_model!r} but its deployment requires "
                             f"{self.gpu_model!r}. Drop the job's gpu_model or update the deployment.")
        return Fit(gpu=self.gpu or other.gpu, gpu_memory_gb=max(self.gpu_memory_gb, other.gpu_memory_gb),
                   gpu_model=self.gpu_model or other.gpu_model, cpu_only=self.cpu_only or other.cpu_only)

    def accepts(self, hw: Mapping[str, Any]) -> bool:
        """Whether a worker with this hardware (its info: num_gpus, gpu_model, gpu_memory_gb) fits."""
        share = float(hw.get("num_gpus") or 0.0)
        if self.cpu_only:
            return share == 0
        if not self.needs_gpu:
            return True
        if share <= 0:
            return False
        if self.gpu_model and self.gpu_model.lower() not in str(hw.get("gpu_model") or "").lower():
            return False
        return self.gpu_memory_gb <= float(hw.get("gpu_memory_gb") or 0.0) * share + 1e-9

    def describe(self) -> str:
        if self.any:
            return "any worker"
        if self.cpu_only:
            return "a CPU-only worker"
        parts = ["a GPU"]
        if self.gpu_model:
            parts.append(f"model {self.gpu_model}")
        if self.gpu_memory_gb:
            parts.append(f"at least {self.gpu_memory_gb:g} GB of GPU memory in the worker's share")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "gpu_memory_gb": self.gpu_memory_gb, "gpu_model": self.gpu_model,
                "cpu_only": self.cpu_only}
