"""Command-line configuration of every `exp/` script, one way.

A script declares its options as dataclasses: the shared argument groups below (`RunArgs`,
`DataArgs`, `ModelArgs`, `VerifierArgs`, `DeviceArgs`) plus its own, each validated in ``__post_init__``. `run`
parses them (HfArgumentParser: dataclass fields become flags), with ``--config x.yaml`` supplying
values and flags given on the command line overriding them, and calls the script's ``main``. A user's
mistake (malformed YAML, an unknown key, a bad value, a missing file, a run directory that belongs to
another run) ends in one line ``error: ...`` naming the flag and what to do, with exit status 1;
a program bug keeps its traceback.

A field shared by two groups (``seed`` and ``run_name`` of `RunArgs` and `transformers.TrainingArguments`)
is one flag whose value reaches both.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A bad option value given by the user; the message names the flag and what to do."""


def require(ok: bool, flag: str, message: str) -> None:
    """Raise `ConfigError` ``--flag: message`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"--{flag} {message}")


def at_least(obj: Any, names: tuple[str, ...] | list[str], low: float = 1) -> None:
    """Every named field of ``obj`` is None or >= ``low``."""
    for name in names:
        value = getattr(obj, name)
        require(value is None or value >= low, name, f"must be >= {low:g}, got {value}")


def fraction(obj: Any, name: str) -> None:
    """A share strictly between 0 and 1 (or None)."""
    value = getattr(obj, name)
    require(value is None or 0 < value < 1, name, f"must be between 0 and 1 (exclusive), got {value}")


# --- typed values that used to be JSON-in-a-string or name=value mini-languages ----------------


def _scalar(text: str) -> Any:
    """A YAML scalar: 3 -> int, 0.5 -> float, true -> bool, anything else a string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, str)) or value is None else text


class Options(dict):
    """A mapping of options: a dict in YAML; on the command line JSON (``'{"kinds": "propagation"}'``)
    or ``key=value`` pairs separated by commas (``kinds=propagation,answer_step=true``; values are
    read as YAML scalars). Parsed once, here."""

    def __init__(self, value: Any = None) -> None:
        if isinstance(value, str):
            value = parse_options(value)
        elif value is None:
            value = {}
        elif not isinstance(value, Mapping):
            try:  # key/value pairs (dataclasses.asdict rebuilds a dict subclass from them)
                value = dict(value)
            except (TypeError, ValueError):
                raise OptionsError(f"expected a mapping of options, got {type(value).__name__} {value!r}") from None
        super().__init__(value)


class OptionsError(ConfigError, argparse.ArgumentTypeError):
    pass


def parse_options(text: str) -> dict[str, Any]:
    s = text.strip()
    if not s:
        return {}
    if s.startswith("{"):
        try:
            value = json.loads(s)
        except json.JSONDecodeError as e:
            raise OptionsError(f"invalid JSON {s!r} ({e.msg} at column {e.colno}); give a JSON object or key=value,...") from None
        if not isinstance(value, dict):
            raise OptionsError(f"expected a JSON object, got {s!r}")
        return value
    out = {}
    for part in s.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise OptionsError(f"expected key=value pairs or a JSON object, got {s!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = _scalar(v.strip())
    return out


def per_name(value: Any, name: str, cast: Callable[[Any], Any] = int) -> Any:
    """A value that may differ per name (e.g. per backbone): a plain value for every name, or a
    mapping ``{name: value}`` (``minilm=100,smollm2=40`` on the command line); a name the mapping
    does not list gets its largest value (e.g. a hub id)."""
    if isinstance(value, Mapping):
        if not value:
            raise ConfigError(f"no value for {name!r}: the mapping is empty")
        return cast(value[name]) if name in value else max(cast(v) for v in value.values())
    return cast(value)


class PerName(dict):
    """`Options` whose values may also be one plain value for every name: ``8`` or ``minilm=8,smollm2=4``."""

    def __new__(cls, value: Any = None):  # a plain value stays a plain value
        if isinstance(value, str) and "=" not in value and not value.strip().startswith("{"):
            return _scalar(value.strip())
        if isinstance(value, (int, float)):
            return value
        return super().__new__(cls)

    def __init__(self, value: Any = None) -> None:
        super().__init__(Options(value))


def split_list(values: Any) -> list:
    """A list field given as YAML list, flags (``--ns 1 2 4``) or the old comma form (``1,2,4``)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values:
        out += [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else [v]
    return out


# --- the shared argument groups -------------------------------------------------------------------


@dataclass
class RunArgs:
    """Where a run writes and how it is identified. ``results/<experiment>/<run_name>/`` belongs to
    the run that wrote it (see `prm.io.RunDir`): a rerun with the same settings resumes or replaces
    it, a run with other settings refuses (``--overwrite`` replaces it)."""

    results_dir: str = field(default="results", metadata={"help": "Root of the results tree."})
    experiment: str | None = field(default=None, metadata={"help": "Results folder under --results_dir (default: the script's name)."})
    run_name: str | None = field(default=None, metadata={"help": "Run folder: <results_dir>/<experiment>/<run_name> (default: the script's)."})
    seed: int = field(default=0, metadata={"help": "Seed for data order, initialization and sampling."})
    dry_run: bool = field(default=False, metadata={"help": "Parse, validate, resolve the data and exit before heavy work; writes nothing under results."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing run directory written with other settings (default: refuse)."})

    def __post_init__(self) -> None:
        require(bool(self.results_dir), "results_dir", "must not be empty")
        for flag in ("experiment", "run_name"):
            value = getattr(self, flag)
            require(value is None or (bool(value.strip()) and "/" not in value and value not in (".", "..")), flag,
                    f"must be a plain folder name, got {value!r}")

    def run_dir(self, experiment: str, run_name: str = "default") -> Path:
        """``<results_dir>/<experiment>/<run_name>`` with the script's defaults."""
        return Path(self.results_dir) / (self.experiment or experiment) / (self.run_name or run_name)


@dataclass
class DataArgs:
    """Step-labeled data: a local file (``$PRM_DATA_DIR`` expands) or a hub id, and its format."""

    data: str | None = field(default=None, metadata={"help": "Data: local file or Hugging Face dataset id."})
    format: str = field(default="stepwise", metadata={"help": "Data format (python -m prm.data --list)."})
    format_options: Options = field(default_factory=Options, metadata={"help": "Converter options: a mapping in YAML; JSON or key=value,... on the command line."})
    eval_data: str | None = field(default=None, metadata={"help": "Held-out data; default: a by-problem split of --data."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Share of problems held out when --eval_data is not given."})
    limit: int | None = field(default=None, metadata={"help": "Use at most this many records."})
    eval_limit: int | None = field(default=None, metadata={"help": "Use at most this many held-out records."})

    def __post_init__(self) -> None:
        self.format_options = Options(self.format_options)
        at_least(self, ("limit", "eval_limit"))
        fraction(self, "eval_fraction")

    def resolved(self, name: str = "data") -> str | None:
        """The path of --data or --eval_data with ``$PRM_DATA_DIR`` expanded; a value that looks
        like a local path (not a hub id ``owner/name``) must exist."""
        return resolve_data(getattr(self, name), name)


def resolve_data(value: str | None, flag: str) -> str | None:
    """Expand ``$PRM_DATA_DIR`` in a data path; fail with the flag's name when a local-looking
    path does not exist (a hub id ``owner/name`` is left to the loader)."""
    from prm.data import resolve_path

    if value is None:
        return None
    try:
        path = resolve_path(value)
    except FileNotFoundError as e:
        raise ConfigError(f"--{flag} {e}") from None
    if not Path(path).exists() and looks_local(value):
        raise ConfigError(f"--{flag} {value}: no such file or directory" + (f" ({path})" if path != value else ""))
    return path


def looks_local(value: str) -> bool:
    """A path rather than a hub id: absolute, relative with ./ or ../, ~, a $VAR, a file suffix,
    or more than one slash (hub ids are ``name`` or ``owner/name``)."""
    return (value.startswith(("/", ".", "~", "$")) or value.count("/") > 1
            or Path(value).suffix in (".json", ".jsonl", ".gz", ".ndjson", ".parquet", ".csv", ".txt", ".yaml"))


@dataclass
class ModelArgs:
    """The PRM backbone and how it is trained: full weights, LoRA, or 4-bit QLoRA."""

    model: str = field(default="minilm", metadata={"help": "Backbone: hub id, local path, or embedded 'minilm' / 'smollm2'."})
    use_pretrained: bool = field(default=True, metadata={"help": "Pretrained weights (else random init from the same config)."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={"help": "Module names to adapt, or all-linear."})
    load_in_4bit: bool = field(default=False, metadata={"help": "4-bit QLoRA base weights (bitsandbytes)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow hub models that ship custom code."})

    def __post_init__(self) -> None:
        check_model(self.model, "model")
        at_least(self, ("lora_r", "lora_alpha"))
        require(0 <= self.lora_dropout < 1, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        self.lora_target_modules = split_list(self.lora_target_modules)
        require(bool(self.lora_target_modules), "lora_target_modules", "must name at least one module (or all-linear)")
        require(self.lora or not self.load_in_4bit, "load_in_4bit", "trains LoRA adapters on frozen 4-bit weights: add --lora")

    @property
    def target_modules(self) -> str | list[str]:
        return "all-linear" if self.lora_target_modules == ["all-linear"] else list(self.lora_target_modules)


def check_model(value: str, flag: str) -> None:
    """An embedded name, an existing directory, or a hub id; a local-looking path must exist."""
    from prm.models.backbones import EMBEDDED

    require(bool(value), flag, "must not be empty")
    if value in EMBEDDED or Path(value).exists():
        return
    if looks_local(value) or value.startswith("results/"):
        raise ConfigError(f"--{flag} {value}: no such directory; give a saved PRM or backbone directory, "
                          f"an embedded name ({', '.join(EMBEDDED)}) or a hub id")


@dataclass
class VerifierArgs:
    """Who grades the steps (`prm.label.verify`)."""

    verifier: str = field(default="auto", metadata={"help": "auto (claude if ANTHROPIC_API_KEY is set, else rules), claude, rules, reference, mc, or consensus."})
    claude_model: str = field(default="claude-sonnet-4-6", metadata={"help": "Claude model id for grading."})
    mc_completions: int = field(default=4, metadata={"help": "mc: continuations sampled from each step prefix."})
    mc_search: str = field(default="linear", metadata={"help": "mc: linear (every prefix) or binary (OmegaPRM's search for the first error).", "choices": ["linear", "binary"]})
    consensus: list[str] = field(default_factory=lambda: ["mc", "rules"], metadata={"help": "consensus: two or more labelers that must agree on the first error."})
    max_concurrency: int = field(default=8, metadata={"help": "Parallel Claude requests."})
    max_cost_usd: float | None = field(default=None, metadata={"help": "Stop Claude work cleanly once this much was spent."})

    def __post_init__(self) -> None:
        self.consensus = split_list(self.consensus)
        known = ("auto", "claude", "rules", "reference", "mc", "consensus")
        require(self.verifier in known, "verifier", f"unknown verifier {self.verifier!r}; known: {', '.join(known)}")
        if self.verifier == "consensus":
            labelers = ("claude", "rules", "reference", "mc")
            bad = [n for n in self.consensus if n not in labelers]
            require(not bad, "consensus", f"unknown labeler {', '.join(bad)}; known: {', '.join(labelers)}")
            require(len(set(self.consensus)) >= 2, "consensus", f"needs two or more different labelers, got {','.join(self.consensus)}")
        at_least(self, ("mc_completions", "max_concurrency"))
        require(self.max_cost_usd is None or self.max_cost_usd >= 0, "max_cost_usd", f"must be >= 0, got {self.max_cost_usd}")


# where a model runs and in which precision: one spelling for every script (`DeviceArgs`) and for
# `prm.models.prm.load_prm`'s string dtypes
DTYPES = ("bf16", "fp16", "fp32")
DTYPE_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}  # torch's names
DTYPE_SPELLINGS = ("auto", *DTYPES, *DTYPE_ALIASES)


def dtype_name(value: str) -> str | None:
    """``auto``, ``bf16``, ``fp16`` or ``fp32`` for any accepted spelling (torch's names too); None
    for an unknown one."""
    v = str(value).strip().lower()
    v = DTYPE_ALIASES.get(v, v)
    return v if v == "auto" or v in DTYPES else None


def resolve_dtype(name: str, device: Any) -> Any:
    """The torch dtype of a `dtype_name`: ``auto`` is bf16 on a CUDA ``device``, fp32 elsewhere."""
    import torch

    if name == "auto":
        name = "bf16" if str(device).startswith("cuda") else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


@dataclass
class DeviceArgs:
    """Where the model's weights live and in which precision (inference, or the weights a plain
    PyTorch loop trains; `transformers.TrainingArguments`' ``bf16``/``fp16`` mixed precision is
    another thing)."""

    device: str = field(default="auto", metadata={"help": "auto (cuda when available, else cpu), cpu, cuda or cuda:N."})
    dtype: str = field(default="auto", metadata={"help": "Model weights: auto (bf16 on a GPU, fp32 on a CPU), bf16, fp16 (CUDA only) or fp32; "
                                                         "torch's names bfloat16, float16, float32 work too."})

    def __post_init__(self) -> None:
        self.device = str(self.device).strip().lower()
        d = self.device
        index = d[len("cuda:"):] if d.startswith("cuda:") else None
        require(d in ("auto", "cpu", "cuda") or (index is not None and index.isdigit()), "device",
                f"must be auto, cpu, cuda or cuda:N, got {d!r}")
        name = dtype_name(self.dtype)
        require(name is not None, "dtype", f"unknown {self.dtype!r}; known: {', '.join(DTYPE_SPELLINGS)}")
        self.dtype = name  # one spelling in config.json and the run's fingerprint
        if name == "fp16":
            require(d.startswith("cuda") or (d == "auto" and _cuda_count() > 0), "dtype",
                    f"fp16 needs a CUDA device (--device {d}{' and none here' if d == 'auto' else ''}); use bf16 or fp32 on a CPU")

    def torch_device(self) -> Any:
        """The `torch.device`; ``auto`` is the first GPU when there is one. Asking for a GPU that
        this machine lacks is a `ConfigError` naming --device."""
        import torch

        n = _cuda_count()
        if self.device == "auto":
            return torch.device("cuda" if n else "cpu")
        if self.device.startswith("cuda"):
            index = int(self.device.split(":")[1]) if ":" in self.device else 0
            require(index < n, "device", f"{self.device}: " + (f"this machine has {n} CUDA device(s)" if n else "no CUDA device here; use cpu or auto"))
        return torch.device(self.device)

    def torch_dtype(self) -> Any:
        """The `torch.dtype` of the weights; ``auto`` is bf16 on a GPU (see `torch_device`), fp32 on a CPU."""
        return resolve_dtype(self.dtype, self.torch_device() if self.dtype == "auto" else self.device)


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# --- parsing ------------------------------------------------------------------------------------


class _Parser(HfArgumentParser):
    """HfArgumentParser that adds a field shared by two groups once, and reports a user's mistake
    as one line instead of usage + message."""

    def _parse_dataclass_field(self, parser: Any, field: dataclasses.Field) -> None:  # type: ignore[override]
        if f"--{field.name}" in self._option_string_actions:
            return  # shared field: one flag, its value goes to every group that has it
        HfArgumentParser._parse_dataclass_field(parser, field)

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        # argparse %-formats help text: a literal '%' (as in "95% intervals") must reach it doubled
        if isinstance(kwargs.get("help"), str):
            kwargs["help"] = kwargs["help"].replace("%", "%%")
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        raise SystemExit(f"error: {message} (see --help)")


def _types(dataclass_types: Any) -> tuple:
    return tuple(dataclass_types) if isinstance(dataclass_types, (tuple, list)) else (dataclass_types,)


def load_yaml(path: str | Path, known: set[str]) -> dict[str, Any]:
    """The option values of a YAML config file; every mistake is a `ConfigError` naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {path}: is a directory; give a YAML file (e.g. exp/configs/<script>/<name>.yaml)")
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"--config {where}: invalid YAML ({getattr(e, 'problem', None) or e}); fix the file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option: value, got {type(values).__name__}")
    unknown = sorted(set(values) - known)
    if unknown:
        hints = [f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, known, 1)) else u for u in unknown]
        raise ConfigError(f"--config {path}: unknown option(s) {', '.join(hints)}; `--help` lists the known ones")
    return values


def parse(dataclass_types: Any, argv: list[str] | None = None, description: str | None = None) -> tuple:
    """Instances of ``dataclass_types`` (a type or a tuple) from defaults, then ``--config x.yaml``,
    then the flags in ``argv``. A user's mistake raises ``SystemExit('error: ...')``."""
    types = _types(dataclass_types)
    parser = _Parser(types, description=description)
    parser.add_argument("--config", action="append", default=[], help="YAML file of option values (several: later ones override earlier ones); "
                        "flags given on the command line override them")
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", action="append", default=[])
    known_args, _ = pre.parse_known_args(argv)
    try:
        values: dict[str, Any] = {}
        for path in known_args.config:  # several: later files override earlier ones
            values.update(load_yaml(path, {f.name for t in types for f in fields(t)}))
        if values:
            for action in parser._actions:
                if action.dest in values:
                    action.required = False
            parser.set_defaults(**values)
        ns = vars(parser.parse_args(argv))
        out = []
        for t in types:
            names = {f.name for f in fields(t) if f.init}
            out.append(t(**{k: v for k, v in ns.items() if k in names}))
    except (ConfigError, ValueError) as e:
        # a value rejected by a group's __post_init__ (ours, or TrainingArguments')
        raise SystemExit(f"error: {first_line(e)}") from None
    return tuple(out)


def first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def user_error_types() -> tuple[type[BaseException], ...]:
    from prm.io import RunDirError
    from prm.label.claude import ClaudeAPIError
    from prm.registry import UnknownName
    from prm.schema import DataError

    # OSError: missing/unreadable/unwritable files and model folders the user named
    return (ConfigError, RunDirError, DataError, UnknownName, ClaudeAPIError, OSError)


def run(main: Callable[..., Any], dataclass_types: Any, description: str | None = None, argv: list[str] | None = None,
        user_errors: tuple[type[BaseException], ...] = ()) -> Any:
    """``main(*parse(dataclass_types, argv))`` for an `exp/` script: a user's mistake (a bad option,
    a missing file, a bad data row, an unknown component name, a run directory of another run, plus
    ``user_errors``) ends in one line ``error: ...`` and exit status 1; anything else still raises."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfgs = parse(dataclass_types, argv, description=description)
    try:
        return main(*cfgs)
    except (*user_error_types(), *user_errors) as e:
        raise SystemExit(f"error: {first_line(e)}") from None


def settings(*groups: Any, **extra: Any) -> dict[str, Any]:
    """The resolved settings of a run as plain JSON-able data (groups by class name), for config.json
    and the run's fingerprint."""
    out: dict[str, Any] = {}
    for g in groups:
        d = g.to_dict() if hasattr(g, "to_dict") else dataclasses.asdict(g)
        out[type(g).__name__] = json.loads(json.dumps(d, default=str))
    out.update(json.loads(json.dumps(extra, default=str)))
    return out
