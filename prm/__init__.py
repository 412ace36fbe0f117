"""PRM lab: process reward models — step-labeled data, training, evaluation and figures."""

__version__ = "0.1.0"
