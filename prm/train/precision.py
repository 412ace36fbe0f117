"""bf16 weights with fp32 master copies: the model computes in bf16 with no autocast, AdamW updates fp32.

Why: under CPU autocast every linear layer casts its fp32 weight and its fp32 input to bf16, and the
fp32-listed ops cast back; those dtype copies were 14% of a MiniLM training step (torch.profiler).
Holding the weights in bf16 removes them. What is not lost: the optimizer's parameters and moments
stay fp32 (an update smaller than a bf16 ulp of the weight still accumulates in the master), and the
model is given back in fp32, from the masters, when training ends or a checkpoint is written.
What changes: activations (the residual stream, layer-norm outputs) are rounded to bf16 between
ops, where autocast kept some in fp32; tests/test_train_levers.py pins the effect on losses and scores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


class MasterWeightOptimizer(torch.optim.Optimizer):
    """Wraps an optimizer built over a model's fp32 parameters: the optimizer keeps fp32 master copies
    (its own parameters from now on) while the model's parameters become bf16. ``step`` copies the
    model's bf16 gradients into the masters, steps, and writes the rounded masters back.

    ``param_groups`` and ``state`` are the inner optimizer's, so learning-rate schedulers, Trainer's
    logging and optimizer checkpoints see the usual objects."""

    def __init__(self, inner: torch.optim.Optimizer, model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16):
        # not Optimizer.__init__: the groups and state are the inner optimizer's
        self.inner = inner
        self.defaults = inner.defaults
        self._optimizer_step_pre_hooks: dict = {}
        self._optimizer_step_post_hooks: dict = {}
        self._optimizer_state_dict_pre_hooks: dict = {}
        self._optimizer_state_dict_post_hooks: dict = {}
        self._optimizer_load_state_dict_pre_hooks: dict = {}
        self._optimizer_load_state_dict_post_hooks: dict = {}
        self.model_params: list[torch.nn.Parameter] = []
        self.masters: list[torch.Tensor] = []
        trained = {id(p) for g in inner.param_groups for p in g["params"]}
        master_of: dict[int, torch.Tensor] = {}
        # every floating parameter gets an fp32 copy (frozen ones too), so the model is given back exact
        for p in model.parameters():
            if p.is_floating_point() and id(p) not in master_of:
                m = p.detach().to(torch.float32, copy=True)
                m.requires_grad_(id(p) in trained)
                master_of[id(p)] = m
                self.model_params.append(p)
                self.masters.append(m)
        for g in inner.param_groups:
            g["params"] = [master_of[id(p)] for p in g["params"]]
        self.trained = [(p, master_of[id(p)]) for p in self.model_params if id(p) in trained]
        self._grad_buf: dict[int, torch.Tensor] = {}  # id(master) -> its fp32 gradient buffer
        # parameters only, in place (a .data swap keeps the Trainer's references valid); fp32 buffers
        # such as rotary inv_freq stay fp32, since rounding them would move every position's angle
        for p in self.model_params:
            p.data = p.data.to(dtype)
        self.dtype = dtype

    @property
    def param_groups(self) -> list[dict]:  # type: ignore[override]
        return self.inner.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict]) -> None:
        self.inner.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.inner.state

    @state.setter
    def state(self, value: Any) -> None:
        self.inner.state = value

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        # The fp32 gradients live in buffers allocated once: a fresh `.to(float32)` per step
        # allocated ~90 MB for MiniLM and paid its page faults every step (a fifth of a CPU step).
        with_grad = []
        for p, m in self.trained:
            if p.grad is None:
                m.grad = None  # skipped by the inner optimizer, as an fp32 one skips it
                continue
            if id(m) not in self._grad_buf:
                self._grad_buf[id(m)] = torch.empty_like(m)
            m.grad = self._grad_buf[id(m)]
            with_grad.append((p, m))
        if with_grad:
            torch._foreach_copy_([m.grad for _, m in with_grad], [p.grad for p, _ in with_grad])  # bf16 -> fp32
        loss = self.inner.step(closure)
        if with_grad:
            torch._foreach_copy_([p.data for p, _ in with_grad], [m for _, m in with_grad])  # round to bf16
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.model_params:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.inner.load_state_dict(state_dict)

    @contextlib.contextmanager
    def fp32_weights(self) -> Iterator[None]:
        """The model holds its fp32 masters inside the block (saving a checkpoint), bf16 again after."""
        low = [p.data for p in self.model_params]
        for p, m in zip(self.model_params, self.masters):
            p.data = m.detach()
        try:
            yield
        finally:
            for p, d in zip(self.model_params, low):
                p.data = d

    def release(self) -> None:
        """Give the model back in fp32 (its parameters take the masters' values)."""
        for p, m in zip(self.model_params, self.masters):
            p.data = m.detach().clone()
            m.grad = None
        self._grad_buf.clear()
