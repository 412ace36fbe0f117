"""PRM training on `transformers.Trainer` (the maintained replacement for TRL's PRMTrainer).

    from prm.models.prm import PRM, PRMSpec
    from prm.train import PRMTrainer, PRMTrainingArguments
    prm = PRM.from_backbone("minilm", PRMSpec(label_scheme="binary"))
    args = PRMTrainingArguments(output_dir="out", num_train_epochs=1)
    trainer = PRMTrainer(prm=prm, args=args, train_dataset=stepwise_ds, eval_dataset=eval_ds)
    trainer.train(); trainer.evaluate(); trainer.save_model("out/final")

Everything Trainer does carries over: gradient accumulation, checkpoints and
``train(resume_from_checkpoint=True)``, evaluation during training, ``report_to``, ``push_to_hub``,
and multi-GPU / DeepSpeed / FSDP under ``accelerate launch``.

Packing (several solutions in one row) is not offered: isolating their attention needs either
flash-attention's variable-length kernels (CUDA only) or a 4-D block mask per row, whose
(seq x seq) cost grows with the packed length; length-grouped batching gets most of the saving
(10% padding on GSM8K rows) with none of the risk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from transformers import EvalPrediction, Trainer, TrainingArguments

from prm.eval.metrics import step_metrics
from prm.models.encoding import IGNORE
from prm.models.prm import (
    PRM,
    PRMSpec,
    is_causal,
    prepare_tokenizer,
    set_attention,
    step_loss,
)
from prm.train.data import (
    EncodeStats,
    StepCollator,
    as_stepwise,
    encode_dataset,
    label_scheme_of,
)

log = logging.getLogger(__name__)


@dataclass
class PRMTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the options of TRL's PRMConfig, with the same meaning.

    Defaults that differ from TrainingArguments: ``learning_rate=1e-5``, ``logging_steps=10``,
    ``train_sampling_strategy="group_by_length"`` (length-grouped batches),
    ``remove_unused_columns=False``.
    """

    max_length: int | None = field(default=1024, metadata={"help": "Maximum tokens per solution (prompt + steps); whole trailing steps are removed beyond it."})
    max_prompt_length: int | None = field(default=512, metadata={"help": "Maximum prompt tokens; the prompt keeps its head."})
    max_completion_length: int | None = field(default=None, metadata={"help": "Maximum tokens of the steps (with separators)."})
    step_separator: str = field(default="\n", metadata={"help": "Text after every step; its last token is where the step is scored."})
    train_on_last_step_only: bool = field(default=False, metadata={"help": "Supervise only the last step of each solution (evaluation still scores every step)."})
    disable_dropout: bool = field(default=True, metadata={"help": "Set every dropout probability in the model to 0."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenizing the dataset."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Initial AdamW learning rate."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    train_sampling_strategy: str = field(default="group_by_length", metadata={"help": "random, sequential or group_by_length."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: the collator needs the step labels."})
    attn_implementation: str = field(default="auto", metadata={"help": "Attention kernel while training: auto, eager, sdpa, flash_attention_2, ... "
                                                                 "auto = eager on a CPU with max_length <= 512 (1.3-1.5x the speed of sdpa's "
                                                                 "CPU flash kernel here, more memory; results/bench/train*.json), else the backbone's own."})

    def __post_init__(self) -> None:
        from prm.config import at_least, require

        at_least(self, ("max_length", "max_prompt_length", "max_completion_length", "per_device_train_batch_size",
                        "per_device_eval_batch_size", "gradient_accumulation_steps"))
        require(self.num_train_epochs > 0 or self.max_steps > 0, "num_train_epochs", f"must be > 0 (or give --max_steps), got {self.num_train_epochs}")
        require(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        # bf16 on a machine without an accelerator means CPU autocast (about 2x the fp32 matmul
        # rate on CPUs with AVX-512 bf16); TrainingArguments insists on use_cpu for that.
        if self.bf16 and not self.use_cpu and not torch.cuda.is_available() and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
            self.use_cpu = True
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; avoids a warning per run
        super().__post_init__()


# Above this many tokens per row eager attention's (batch, heads, seq, seq) probabilities, kept for
# the backward pass, cost more memory than the speed is worth on CPU.
EAGER_MAX_LENGTH = 512


def attention_kernel(args: PRMTrainingArguments) -> str | None:
    """The attention implementation to train with (None: keep the backbone's). On CPU, torch's SDPA
    flash kernel is slow for short rows (its backward was 31% of a MiniLM step), so ``auto`` picks
    eager there when rows are at most `EAGER_MAX_LENGTH` tokens."""
    if args.attn_implementation != "auto":
        return args.attn_implementation
    on_cpu = args.use_cpu or not torch.cuda.is_available()
    return "eager" if on_cpu and args.max_length is not None and args.max_length <= EAGER_MAX_LENGTH else None


def disable_dropout(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


class PRMTrainer(Trainer):
    """Trains a `PRM` on stepwise data (a `datasets.Dataset` of records, or rows of the TRL or old
    ProcessRewardTrainer formats). Reports step metrics on the eval set."""

    def __init__(
        self,
        prm: PRM | None = None,
        args: PRMTrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        **kwargs: Any,
    ):
        if args is None:
            raise ValueError("PRMTrainer needs args=PRMTrainingArguments(...)")
        if prm is None:
            # The old ProcessRewardTrainer style: a token-classification model and its tokenizer.
            if model is None or tokenizer is None:
                raise ValueError("give prm=PRM(...), or model= and tokenizer=")
            scheme = label_scheme_of(as_stepwise(train_dataset)) if train_dataset is not None else "binary"
            prepare_tokenizer(tokenizer, model, args.step_separator)
            prm = PRM(model, tokenizer, PRMSpec(label_scheme=scheme, kind="causal" if is_causal(model.config) else "encoder",
                                               backbone=getattr(model.config, "_name_or_path", "")))
        self.prm = prm
        spec = prm.spec
        if spec.prm_kind == "token_cls":  # other kinds' step tags are fixed by their layout
            spec.separator = args.step_separator
        if args.label_names is None:
            args.label_names = ["labels"]  # heads whose forward takes no labels (qwen_prm, value_head)
        spec.max_length, spec.max_prompt_length, spec.max_completion_length = args.max_length, args.max_prompt_length, args.max_completion_length
        self.encode_stats: dict[str, EncodeStats] = {}
        train = self._encode(train_dataset, args, "train") if train_dataset is not None else None
        evals = self._encode(eval_dataset, args, "eval", eval=True) if eval_dataset is not None else None
        if args.disable_dropout:
            disable_dropout(prm.model)
        kernel = attention_kernel(args)
        if kernel:
            set_attention(prm.model, kernel)
        super().__init__(
            model=prm.model,
            args=args,
            train_dataset=train,
            eval_dataset=evals,
            processing_class=prm.tokenizer,
            data_collator=StepCollator(prm.tokenizer.pad_token_id),
            compute_metrics=self._metrics,
            preprocess_logits_for_metrics=lambda logits, labels: logits.float().softmax(-1),
            **kwargs,
        )
        # Our loss is a mean per micro-batch; let Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False

    def _encode(self, data: Any, args: PRMTrainingArguments, name: str, eval: bool = False) -> datasets.Dataset:
        ds = as_stepwise(data)
        scheme = label_scheme_of(ds)
        if scheme != self.prm.spec.label_scheme:
            raise ValueError(f"{name} data has label scheme '{scheme}' but the PRM was built for '{self.prm.spec.label_scheme}'")
        enc, stats = encode_dataset(
            ds, self.prm.tokenizer, separator=args.step_separator, max_length=args.max_length,
            max_prompt_length=args.max_prompt_length, max_completion_length=args.max_completion_length,
            train_on_last_step_only=args.train_on_last_step_only and not eval, num_proc=args.dataset_num_proc, name=name,
            encoder=self.prm.kind.encode,
        )
        if len(enc) == 0:
            raise ValueError(f"no {name} row has a labeled step within max_length={args.max_length}")
        self.encode_stats[name] = stats
        return enc

    def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None):
        labels = inputs.pop("labels")
        weights = inputs.pop("weights", None)
        logits = self.prm.kind.step_logits(model, **inputs)  # (batch, seq, classes) for every kind
        loss = step_loss(logits, labels, self.prm.spec.label_scheme, weights)
        return (loss, {"logits": logits}) if return_outputs else loss

    def _metrics(self, pred: EvalPrediction) -> dict:
        probs, labels = pred.predictions, pred.label_ids  # (n, seq, classes), (n, seq)
        mask = labels != IGNORE
        m = step_metrics(labels[mask], probs[mask], self.prm.spec.label_scheme)
        return {k: v for k, v in m.items() if isinstance(v, (int, float)) and v is not None and not np.isnan(v)}

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        out = output_dir or self.args.output_dir
        if self.args.should_save:
            self.prm.spec.adapter = hasattr(self.prm.model, "peft_config")
            self.prm.spec.save(out)
