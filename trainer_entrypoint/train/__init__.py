"""Training: the worker pod's launcher and each torchrun rank."""
