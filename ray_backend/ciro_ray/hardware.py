"""What a node has: its CPUs and, through ``nvidia-smi``, its GPUs' model and memory."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

__all__ = ["Hardware", "nvidia_gpus"]


def nvidia_gpus() -> list[tuple[str, float]]:
    """(model name, memory in GB) of each NVIDIA GPU ``nvidia-smi`` sees; [] without a driver."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, _, mib = line.rpartition(",")
        try:
            gpus.append((name.strip(), round(float(mib) / 1024, 1)))
        except ValueError:
            continue
    return gpus


@dataclass(frozen=True)
class Hardware:
    """A provider node's offer: CPUs, GPUs (count, model, memory per GPU) and where the GPU facts came from."""

    cpus: float
    gpus: float = 0.0
    gpu_model: str | None = None
    gpu_memory_gb: float = 0.0
    #: "detected" (nvidia-smi), "declared" (the provider's flags), or None without GPUs.
    gpu_source: str | None = None

    @classmethod
    def detect(cls, *, cpus: float | None = None, gpus: float | None = None, gpu_model: str | None = None,
               gpu_memory_gb: float | None = None) -> Hardware:
        """This machine's hardware; each argument given overrides what was detected (and makes it declared)."""
        found = nvidia_gpus()
        n = float(len(found)) if gpus is None else float(gpus)
        model = gpu_model or (found[0][0] if found else None)
        memory = gpu_memory_gb if gpu_memory_gb is not None else (found[0][1] if found else 0.0)
        declared = gpu_model is not None or gpu_memory_gb is not None or (gpus is not None and not found)
        source = None if n == 0 else ("declared" if declared else "detected")
        return cls(cpus=float(cpus if cpus is not None else (os.cpu_count() or 1)), gpus=n,
                   gpu_model=model if n else None, gpu_memory_gb=memory if n else 0.0, gpu_source=source)

    def describe(self) -> str:
        gpu = f", {self.gpus:g} x {self.gpu_model or 'GPU'} ({self.gpu_memory_gb:g} GB, {self.gpu_source})" \
            if self.gpus else ", no GPU"
        return f"{self.cpus:g} CPU{gpu}"
