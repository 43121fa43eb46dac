"""Fault injection for the tests' trainer processes (on PYTHONPATH only where a test puts it).

With KUBETUNE_TEST_OOM_AT_STEP=N, the first training step at or after N raises the error a GPU
raises when it runs out of memory, from inside the real Trainer, so the trainer's own handling
(classification, the report, the exit code) is what is tested.
"""

import importlib.abc
import importlib.util
import os
import sys

STEP = os.environ.get("KUBETUNE_TEST_OOM_AT_STEP")


class _PatchTrainer(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name != "transformers.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        self._inner = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        original = module.Trainer.training_step

        def training_step(trainer, *args, **kwargs):
            if trainer.state.global_step >= int(STEP):
                import torch

                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.11 GiB "
                                             "total capacity; 77.02 GiB already allocated)")
            return original(trainer, *args, **kwargs)

        module.Trainer.training_step = training_step


if STEP:
    sys.meta_path.insert(0, _PatchTrainer())
