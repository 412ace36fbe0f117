"""PRM training: `PRMTrainer` on transformers.Trainer (bilevel DreamPRM training arrives in `prm.train.bilevel`)."""

from prm.train.trainer import PRMTrainer, PRMTrainingArguments

__all__ = ["PRMTrainer", "PRMTrainingArguments"]
