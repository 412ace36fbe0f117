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

Speed levers, each a field of `PRMTrainingArguments` (measured by ``python exp/bench.py train``
and torch.profiler; CPU time per MiniLM step, 2-core EPYC): ``bf16_master_weights`` (on: bf16
weights, no autocast, fp32 masters in AdamW whose gradients live in buffers allocated once, see
`prm.train.precision`; 15% less, and 11% less again from the reused buffers),
``packing`` (off: first-fit rows into fewer sequences with a block-diagonal mask; 5% more here,
since length-grouped batches leave ~5% padding at 1,000 rows and the mask adds work),
``share_prefix`` (on by default where it applies: causal token kinds, rows repeating a prompt; a
problem's rows share their prompt and first steps in one tree-masked sequence; SmolLM2 fp32, 200
rows: 1.80x (1.68-1.98) examples/s, 0.60 vs 1.14 positions per row token, 4.6 vs 7.1 GB peak RSS),
``last_layer_at_labels`` (on: a BERT-layout encoder's last layer runs its queries, feed-forward and
head at labeled positions only, `prm.models.last_layer`; same loss and gradients; MiniLM fp32
whole epochs, 1,000 rows: 1.20x (1.12-1.28) examples/s, same accuracy and peak RSS), ``freeze_embeddings`` (off: a modelling choice;
~1% less), ``attn_implementation`` (auto: eager on CPU for rows <= 512 tokens in bf16 or packed, else the backbone's sdpa),
TrainingArguments' own ``optim`` (default ``adamw_torch_fused``, one
fused kernel) and ``torch_compile`` (off: on a CPU it recompiled for every new batch width, 7 min
for 20 steps, and gained nothing once compiled; compiling the forward with ``dynamic=True`` instead
compiles once, 75 s for MiniLM on 2 cores, and its steps were no faster: median 0.223 vs 0.212 s).
The first step of a run is slow for both this trainer and TRL's (SmolLM2: forward 10 s, then 1.5 s
for the same batch): its element-wise ops first-touch the pages of the activations (~2M page faults
for a 7.5 GB peak); malloc settings and transparent huge pages did not shorten it.
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
    GroupedLengthSampler,
    StepCollator,
    as_stepwise,
    encode_dataset,
    label_scheme_of,
)
from prm.train.precision import MasterWeightOptimizer

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
                                                                 "auto = eager on a CPU with max_length <= 512 in bf16 or with packed rows (there 1.04-1.5x the "
                                                                 "speed of sdpa, more memory; results/bench/train*.json), else the backbone's own "
                                                                 "(fp32 rows on a CPU: sdpa, 1.09x eager's speed on MiniLM, 25% less memory)."})
    bf16_master_weights: bool = field(default=True, metadata={"help": "With bf16: hold the weights in bf16 and compute without autocast while AdamW "
                                                              "updates fp32 master copies; the model is given back (and checkpointed) in fp32. "
                                                              "Removes autocast's per-op dtype copies (14% of a CPU step). Used only with "
                                                              "gradient_accumulation_steps=1 and a plain (not PEFT, not quantized, not DeepSpeed/FSDP) "
                                                              "model; otherwise autocast, with a log line."})
    packing: bool = field(default=False, metadata={"help": "Fit each batch's rows into as few sequences as hold them (first-fit at the longest row's "
                                                   "width), attention kept inside each row by a block-diagonal mask and position ids "
                                                   "restarting per row; same rows per step, same loss. token_cls and lm_tokens kinds."})
    share_prefix: bool | None = field(default=None, metadata={"help": "Causal backbones (token_cls, lm_tokens kinds): batches keep one problem's rows "
                                                               "together, and the rows of a packed sequence share their common prefix of tokens "
                                                               "(the question, identical leading steps), computed once, with a tree mask so each "
                                                               "token sees exactly its own row. Implies packing; same loss and gradients as "
                                                               "separate rows (a shared labeled step counts once per row). Default (unset): on "
                                                               "where it applies, i.e. a causal backbone with these kinds, length-grouped "
                                                               "batches, and training rows that repeat a prompt; false turns it off."})
    last_layer_at_labels: bool = field(default=True, metadata={"help": "Encoders with BERT's layer layout (bert, roberta, xlm-roberta): compute the "
                                                                   "last layer's queries, feed-forward and head only at labeled positions (keys and "
                                                                   "values still at all); same loss and gradients. Elsewhere no effect."})
    freeze_embeddings: bool = field(default=False, metadata={"help": "Do not train the input token embeddings (MiniLM: 11.7M of 22.7M parameters; "
                                                             "a tied LM head freezes with them). A modelling choice: it changes the result."})

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
        if self.bf16 and self.use_cpu:
            from prm.device import cpu_bf16_fast

            if not cpu_bf16_fast():
                log.warning("bf16 on a CPU without bf16 matmul instructions (avx512_bf16, AMX, Arm BF16) runs several times "
                            "slower than fp32 here; pass --bf16 false (bf16=False) to train in fp32")
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; avoids a warning per run
        super().__post_init__()


# Above this many tokens per row eager attention's (batch, heads, seq, seq) probabilities, kept for
# the backward pass, cost more memory than the speed is worth on CPU.
EAGER_MAX_LENGTH = 512


def attention_kernel(args: PRMTrainingArguments, packed: bool = False) -> str | None:
    """The attention implementation to train with (None: keep the backbone's). ``auto`` picks eager
    on a CPU for rows of at most `EAGER_MAX_LENGTH` tokens where it measured faster than torch's
    SDPA: in bf16 (1.3-1.5x; the CPU flash kernel's backward was 31% of a MiniLM step) and for
    ``packed`` batches, a 4-D block or tree mask (SmolLM2 fp32 with shared prefixes: 1.04x, 10% more
    memory); with fp32 rows one per sequence SDPA was the faster (MiniLM: 1.09x, 25% less memory),
    so the backbone's own kernel stays."""
    if args.attn_implementation != "auto":
        return args.attn_implementation
    on_cpu = args.use_cpu or not torch.cuda.is_available()
    short = args.max_length is not None and args.max_length <= EAGER_MAX_LENGTH
    return "eager" if on_cpu and short and (args.bf16 or packed) else None


def disable_dropout(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def packed_mask(allowed: torch.Tensor, model: Any) -> torch.Tensor | None:
    """A packed batch's (seqs, 1, width, width) boolean mask (True: may attend) in the form the
    model's attention kernel takes: additive in the weights' dtype for eager, boolean for sdpa and
    flex; None for flash-attention, which finds the rows from the restarting position ids."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    impl = getattr(base.config, "_attn_implementation", "eager") or "eager"
    if impl.startswith("flash") or "kernels-community" in impl:
        return None
    if impl != "eager":
        return allowed
    dtype = next(p for p in base.parameters() if p.is_floating_point()).dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


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
        self.share_prefix = bool(args.share_prefix)  # resolved from the training rows when unset (_encode)
        train = self._encode(train_dataset, args, "train") if train_dataset is not None else None
        evals = self._encode(eval_dataset, args, "eval", eval=True) if eval_dataset is not None else None
        if (args.packing or self.share_prefix) and spec.prm_kind not in ("token_cls", "lm_tokens"):
            flag = "share_prefix" if self.share_prefix else "packing"
            raise ValueError(f"{flag} needs a kind whose model takes position_ids (token_cls, lm_tokens), not {spec.prm_kind}")
        if self.share_prefix and spec.kind != "causal":
            raise ValueError(f"share_prefix needs a causal backbone: in an encoder ({spec.backbone or 'this model'}) a prefix token "
                             "attends to the whole row, so rows cannot share it")
        if args.disable_dropout:
            disable_dropout(prm.model)
        kernel = attention_kernel(args, packed=args.packing or self.share_prefix)
        if kernel:
            set_attention(prm.model, kernel)
        super().__init__(
            model=prm.model,
            args=args,
            train_dataset=train,
            eval_dataset=evals,
            processing_class=prm.tokenizer,
            data_collator=StepCollator(prm.tokenizer.pad_token_id, pack=args.packing, causal=spec.kind == "causal",
                                       share_prefix=self.share_prefix, max_width=args.max_length),
            compute_metrics=self._metrics,
            preprocess_logits_for_metrics=lambda logits, labels: logits.float().softmax(-1),
            **kwargs,
        )
        # Our loss is a mean per micro-batch; let Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        if args.freeze_embeddings:
            prm.model.get_input_embeddings().weight.requires_grad_(False)
        self._master: MasterWeightOptimizer | None = None
        self.use_master_weights = self._master_weights_apply(args)
        if self.use_master_weights:
            from accelerate.utils import AutocastKwargs

            # the weights are bf16 while training; autocast would only add fp32 round trips
            self.accelerator.autocast_handler = AutocastKwargs(enabled=False)

    def _master_weights_apply(self, args: PRMTrainingArguments) -> bool:
        if not (args.bf16 and args.bf16_master_weights):
            return False
        model = self.prm.model
        why = [text for bad, text in (
            (args.gradient_accumulation_steps > 1, "gradient_accumulation_steps > 1 would sum gradients in bf16"),
            (hasattr(model, "peft_config"), "a PEFT model"),
            (bool(getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None)), "a quantized model"),
            (self.is_deepspeed_enabled or self.is_fsdp_enabled, "DeepSpeed/FSDP manage precision themselves"),
        ) if bad]
        if why:
            log.info("bf16_master_weights not used (%s): bf16 autocast over fp32 weights instead", "; ".join(why))
        return not why

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        opt = super().create_optimizer(model)
        if self.use_master_weights and self._master is None:
            self._master = MasterWeightOptimizer(opt, self.model)  # casts the model's parameters to bf16
            self.optimizer = self._master
        return self.optimizer

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().train(*args, **kwargs)
        finally:
            if self._master is not None:  # the model leaves training in fp32, holding the masters
                self._master.release()
                self._master, self.optimizer, self.lr_scheduler = None, None, None

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # checkpoints written during training hold the fp32 masters, not the bf16 working copy
        if self._master is not None and state_dict is None:
            with self._master.fp32_weights():
                return super()._save(output_dir, state_dict)
        return super()._save(output_dir, state_dict)

    def _encode(self, data: Any, args: PRMTrainingArguments, name: str, eval: bool = False) -> datasets.Dataset:
        ds = as_stepwise(data)
        scheme = label_scheme_of(ds)
        if scheme != self.prm.spec.label_scheme:
            raise ValueError(f"{name} data has label scheme '{scheme}' but the PRM was built for '{self.prm.spec.label_scheme}'")
        if not eval:  # the default resolved per trainer, so one args object serves runs on other data
            self.share_prefix = self._share_prefix_applies(args, ds) if args.share_prefix is None else args.share_prefix
        if self.share_prefix and not eval and self.prm.spec.kind == "causal":
            # rows of one question may share a prefix; evaluation keeps one row per solution
            index: dict[str, int] = {}
            ds = ds.add_column("group", [index.setdefault(p, len(index)) for p in ds["prompt"]])
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

    def _share_prefix_applies(self, args: PRMTrainingArguments, ds: datasets.Dataset) -> bool:
        """share_prefix's default: on for a causal token_cls/lm_tokens PRM trained on length-grouped
        batches (the sampler it replaces) whose rows repeat a prompt; elsewhere there is nothing to share."""
        spec = self.prm.spec
        if spec.kind != "causal" or spec.prm_kind not in ("token_cls", "lm_tokens") or args.train_sampling_strategy != "group_by_length":
            return False
        rows, distinct = len(ds), len(set(ds["prompt"]))
        if distinct < rows:
            log.info("share_prefix on: %d training rows over %d prompts share their common prefixes (share_prefix=False turns it off)",
                     rows, distinct)
        return distinct < rows

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if self.share_prefix and isinstance(ds, datasets.Dataset) and "group" in ds.column_names:
            return GroupedLengthSampler(ds["length"], ds["group"], self.args.train_batch_size * self.args.gradient_accumulation_steps)
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None):
        labels = inputs.pop("labels")
        weights = inputs.pop("weights", None)
        count = inputs.pop("label_count", None)  # shared prefixes: labeled steps of the unshared rows
        if inputs["attention_mask"].dim() == 4:  # packed rows: the block mask in the attention kernel's form
            inputs["attention_mask"] = packed_mask(inputs["attention_mask"], model)
        at = labels != IGNORE if self.args.last_layer_at_labels else None  # the positions the loss reads
        logits = self.prm.kind.step_logits(model, at=at, **inputs)  # (batch, seq, classes) for every kind
        loss = step_loss(logits, labels, self.prm.spec.label_scheme, weights, denominator=count)
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
