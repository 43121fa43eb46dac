"""What runs inside kubetune worker and evaluation pods (`python -m trainer_entrypoint ...`)."""
