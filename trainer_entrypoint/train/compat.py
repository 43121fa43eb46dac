"""Small compatibility shims for the library versions kubetune pins (constraints.txt)."""

from __future__ import annotations

_registered = False


def load_indexed_cpu_locations() -> None:
    """Let torch.load map storages to `cpu:N`.

    transformers 5.17 resumes a multi-rank run with `torch.load(optimizer.pt,
    map_location=args.device)` (Trainer._load_optimizer_and_scheduler), and on a CPU the device is
    `cpu:0`, which torch's own deserializers refuse ("don't know how to restore data location ...
    tagged with cpu:0"). A CPU is a CPU whatever its index, so such a storage stays where it is."""
    global _registered
    if _registered:
        return
    import torch

    def cpu_indexed(storage, location: str):
        return storage if location.startswith("cpu:") else None

    torch.serialization.register_package(11, lambda _: None, cpu_indexed)
    _registered = True
