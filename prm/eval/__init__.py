"""Evaluation: step metrics, best-of-N, ProcessBench-style first-error F1."""
