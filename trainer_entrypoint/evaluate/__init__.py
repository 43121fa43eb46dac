"""Evaluation: the evaluation Job's command, its engines, metrics and report."""
