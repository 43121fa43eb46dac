"""The table of data-centre GPUs a plan knows: memory and dense bf16 peak, and how each is
recognised in a CUDA device name, a node label or an extended resource name.

Adding a GPU is a row here. Memory is what the device reports (nvidia-smi's MiB), not the
marketing figure: an "80 GB" H100 gives CUDA 81,559 MiB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_bytes: int
    bf16_tflops: Optional[float]  # dense, without sparsity; None when unknown (a MIG slice)
    # Case-insensitive search in a CUDA device name ("NVIDIA H100 80GB HBM3"), a GPU feature
    # discovery label ("NVIDIA-H100-80GB-HBM3") or a cloud's accelerator label ("nvidia-h100-80gb").
    pattern: str

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB

    @property
    def peak_flops(self) -> Optional[float]:
        return self.bf16_tflops * 1e12 if self.bf16_tflops else None


# Most specific first: the first row whose pattern matches wins.
GPUS: tuple[Gpu, ...] = (
    Gpu("B200", 183_359 * MIB, 2250, r"b200"),
    Gpu("H200", 143_771 * MIB, 989, r"h200"),
    Gpu("H100", 81_559 * MIB, 989, r"h100"),
    Gpu("A100-80", 81_920 * MIB, 312, r"a100.*80"),
    Gpu("A100-40", 40_960 * MIB, 312, r"a100"),
    Gpu("L40S", 46_068 * MIB, 362, r"l40s"),
)
GPU_NAMES: tuple[str, ...] = tuple(gpu.name for gpu in GPUS)

# Node labels that name the GPU model or its memory (GPU feature discovery, GKE, EKS).
PRODUCT_LABELS = ("nvidia.com/gpu.product", "cloud.google.com/gke-accelerator", "k8s.amazonaws.com/accelerator")
MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB, from GPU feature discovery
# A MIG slice as an extended resource: nvidia.com/mig-3g.40gb.
MIG_RESOURCE = re.compile(r"mig-\d+g\.(\d+)gb$")


def gpu_named(name: str) -> Optional[Gpu]:
    """The row for a table name (H100) or a device name (NVIDIA H100 80GB HBM3)."""
    for gpu in GPUS:
        if name.upper() == gpu.name.upper() or re.search(gpu.pattern, name, re.IGNORECASE):
            return gpu
    return None


def gpu_for_pods(node_selector: Mapping[str, str], resource_name: str) -> Optional[Gpu]:
    """The GPU a job's pods get, when their node selector or GPU resource says: a product label
    names a row; a memory label or a MIG resource gives the memory alone."""
    for label in PRODUCT_LABELS:
        if label in node_selector and (gpu := gpu_named(node_selector[label])):
            return gpu
    if mig := MIG_RESOURCE.search(resource_name):
        return Gpu(resource_name, int(mig.group(1)) * 1000**3, None, re.escape(resource_name))
    memory = node_selector.get(MEMORY_LABEL, "")
    if memory.isdigit():
        return Gpu(f"{int(memory)} MiB GPU", int(memory) * MIB, None, "")
    return None
