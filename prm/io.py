"""Reading JSON/JSONL input with locations for error messages; atomic JSON/JSONL writing; paths."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import math
import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prm.schema import DataError

REPO_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)


def data_dir() -> Path | None:
    """Where local copies of public data sets live: ``$PRM_DATA_DIR``, else ``../shared/data``
    next to the repository when it exists, else None."""
    env = os.environ.get("PRM_DATA_DIR")
    if env:
        return Path(env)
    guess = REPO_ROOT.parent / "shared" / "data"
    return guess if guess.is_dir() else None


def secret(name: str) -> str | None:
    """A credential (``ANTHROPIC_API_KEY``, ``HF_AUTH_TOKEN``, ...) from the environment, else from a
    ``.env`` file in the working directory. Callers never write it anywhere."""
    value = os.environ.get(name)
    if value:
        return value
    if not Path(".env").is_file():
        return None
    try:
        from dotenv import dotenv_values
    except ImportError:
        return None
    return dotenv_values(".env").get(name) or None


def use_hf_token() -> bool:
    """Make ``HF_AUTH_TOKEN`` (environment or .env; the original scripts' name) visible to the
    Hugging Face hub client as ``HF_TOKEN``, for gated models. True when a token is in use."""
    if os.environ.get("HF_TOKEN"):
        return True
    token = secret("HF_AUTH_TOKEN")
    if token:
        os.environ["HF_TOKEN"] = token
    return bool(token)


_BOM = b"\xef\xbb\xbf"
_RE_ENCODE = "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
# Errors of a compressed stream that is not gzip, corrupt or cut short.
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


def _open_bytes(path: Path) -> io.BufferedIOBase:
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise DataError(None, "cannot read the file", e.strerror or str(e), where=str(path)) from None


def _is_jsonl(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    return name.endswith((".jsonl", ".ndjson"))


def _decode(raw: bytes, where: str, whole_file: bool = False) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if whole_file:  # name the line of the bad byte
            line = raw.count(b"\n", 0, e.start) + 1
            where = f"{where}:{line}"
        raise DataError(None, "not UTF-8 text", f"byte 0x{raw[e.start]:02x}; {_RE_ENCODE}", where=where) from None


def _loads(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(None, "invalid JSON", f"{e.msg}, column {e.colno}", where=where) from None
    except RecursionError:
        raise DataError(None, "invalid JSON", "nested too deeply to read", where=where) from None


def _read_failed(path: Path, e: BaseException, after: int | None = None) -> DataError:
    what = "not a readable gzip file" if path.suffix == ".gz" else "cannot read the file"
    detail = str(e) or type(e).__name__
    if after:
        detail += f"; stopped after line {after}"
    return DataError(None, what, detail, where=str(path))


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered raw lines (BOM removed); a gzip or disk error becomes a DataError for the file."""
    f = _open_bytes(path)
    n = 0
    try:
        with f:
            for n, raw in enumerate(f, 1):
                yield n, raw[3:] if n == 1 and raw.startswith(_BOM) else raw
    except _GZIP_ERRORS as e:
        raise _read_failed(path, e, n) from None


def iter_json_rows(path: str | Path, bad_lines: str = "raise") -> Iterator[tuple[str, Any]]:
    """Yield ``(where, row)`` for every row of a JSON or JSONL file (optionally ``.gz``).

    ``where`` is ``path:LINE`` for JSONL and ``path[INDEX]`` for the items of a JSON array (a JSON
    file holding one object is one row). A line that is not UTF-8 or not valid JSON raises DataError
    at its line; with ``bad_lines="yield"`` such a JSONL line is yielded as ``(where, DataError)``
    instead, so a lenient reader can count it and go on. A file that cannot be read (a corrupt or
    cut-short ``.gz``, a disk error) raises DataError for the file. A UTF-8 byte-order mark is skipped.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise DataError(None, "is a folder, not a JSON/JSONL file", where=str(path))
    if _is_jsonl(path):
        for n, raw in _lines(path):
            if not raw.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = _loads(_decode(raw, where), where)
            except DataError as err:
                if bad_lines != "yield":
                    raise
                row = err
            yield where, row
        return
    f = _open_bytes(path)
    try:
        with f:
            data = f.read()
    except _GZIP_ERRORS as e:
        raise _read_failed(path, e) from None
    text = _decode(data[3:] if data.startswith(_BOM) else data, str(path), whole_file=True)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":
            raise DataError(None, "invalid JSON", e.msg, where=f"{path}:{e.lineno}") from None
        # Several JSON values one after another (JSON Lines named .json, or concatenated
        # pretty-printed objects): read them one by one, each located at its first line.
        yield from _iter_concatenated(text, path)
        return
    except RecursionError:
        raise DataError(None, "invalid JSON", "nested too deeply to read", where=str(path)) from None
    if isinstance(data, list):
        for i, row in enumerate(data):
            yield f"{path}[{i}]", row
    else:
        yield str(path), data


def _iter_concatenated(text: str, path: Path) -> Iterator[tuple[str, Any]]:
    dec = json.JSONDecoder()
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            return
        line = text.count("\n", 0, pos) + 1
        try:
            row, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(None, "invalid JSON", e.msg, where=f"{path}:{e.lineno}") from None
        except RecursionError:
            raise DataError(None, "invalid JSON", "nested too deeply to read", where=f"{path}:{line}") from None
        yield f"{path}:{line}", row


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by null (standard JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(obj: Any, strict: bool = False, **kw: Any) -> str:
    """Standard JSON, never ``NaN``/``Infinity``. A non-finite float raises ValueError when
    ``strict`` (data records: it was validated away, so one here is a bug), else becomes null
    (metrics: an undefined value, e.g. the loss of a diverged run)."""
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, **kw)
    except ValueError:
        if strict:
            raise
        return json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False, **kw)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (a temp file renamed over the target), so a killed job never leaves
    half a file behind."""
    _atomic_write(Path(path), dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Any], strict: bool = False) -> int:
    """Write rows as JSON Lines atomically; returns how many rows were written. ``strict``: see `dumps`."""
    lines = [dumps(r, strict) for r in rows]
    _atomic_write(Path(path), "".join(x + "\n" for x in lines))
    return len(lines)


def append_jsonl(path: str | Path, row: Any) -> None:
    """Append one row and flush it to disk (resumable outputs of long jobs).

    A job killed mid-write leaves a torn last line (no newline at the end). Before appending, such a
    tail is repaired: completed with a newline when it is a whole JSON value, else cut off (logged;
    its work is redone), so the new row never fuses with a fragment."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (dumps(row) + "\n").encode("utf-8")
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                _repair_tail(f, path, size)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _repair_tail(f: Any, path: Path, size: int) -> None:
    start = max(0, size - (1 << 20))
    while True:  # find the start of the last line
        f.seek(start)
        chunk = f.read(size - start)
        cut = chunk.rfind(b"\n")
        if cut >= 0 or start == 0:
            start = start + cut + 1
            break
        start = max(0, start - (1 << 20))
    f.seek(start)
    tail = f.read(size - start)
    try:
        json.loads(tail.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        log.warning("%s: dropped a torn last line (%d bytes, an interrupted write); its work is redone", path, len(tail))
        f.truncate(start)
        return
    f.seek(0, os.SEEK_END)
    f.write(b"\n")


def read_appended(path: str | Path) -> list[Any]:
    """The rows of an append-only JSONL work file (a cache, a resumable job's output); [] when it
    does not exist yet. A line that is not valid JSON — normally the torn last line of a job killed
    mid-write — is dropped, counted and logged as a warning, never fatal: its work is redone."""
    path = Path(path)
    if not path.is_file():
        return []
    rows, bad = [], []
    for where, row in iter_json_rows(path, bad_lines="yield"):
        if isinstance(row, DataError):
            bad.append(where.rsplit(":", 1)[-1])
        else:
            rows.append(row)
    if bad:
        log.warning("%s: dropped %d unreadable line(s) (line %s; a torn line from an interrupted write); their work is redone",
                    path, len(bad), ", ".join(bad[:5]))
    return rows


def read_jsonl(path: str | Path) -> list[Any]:
    return [row for _, row in iter_json_rows(path)]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with opener(tmp, "wt", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- run directories -------------------------------------------------------------------------

# key names that hold credentials ("hf_token", "anthropic_api_key"; not "max_new_tokens")
SECRET_KEY = re.compile(r"api_?key|secret|password|passwd|(^|_)(auth_)?token$", re.IGNORECASE)


def git_sha() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("prm-lab", "torch", "transformers", "datasets", "peft", "accelerate", "math-verify", "anthropic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def redact(cfg: Any) -> Any:
    """Drop values whose key names a secret, so credentials never reach results."""
    if isinstance(cfg, dict):
        return {k: ("<redacted>" if SECRET_KEY.search(str(k)) and v else redact(v)) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [redact(v) for v in cfg]
    return cfg


# Settings that never change a run's results: where it writes, how it is named, logging and
# checkpoint cadence, resuming, concurrency. Everything else is in the fingerprint.
NOT_IN_FINGERPRINT = frozenset({
    "results_dir", "run_name", "experiment", "dry_run", "overwrite", "output_dir", "logging_dir", "output_root",
    "resume_from_checkpoint", "resume_from", "resume_step", "weights_path", "num_workers", "dataloader_num_workers",
    "disable_wandb", "project_name", "debug", "logging_steps", "log_every", "report_to", "save_strategy", "save_steps",
    "save_total_limit", "save_every", "keep_last", "yes", "max_concurrency", "wait_for_gpu", "gpu_min_free_gb",
    "skip_generation", "dataloader_persistent_workers", "dataloader_prefetch_factor", "eval_batch_size",
    "per_device_eval_batch_size", "work_dir", "stages", "note", "max_cost_usd",
})


class RunDirError(Exception):
    """A run directory that this run may not write (another run's, a file, unwritable)."""


def fingerprint(settings: Any) -> str:
    """A short hash of the settings that affect a run's results (`NOT_IN_FINGERPRINT` left out)."""
    return hashlib.sha256(json.dumps(_fingerprinted(redact(settings)), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fingerprinted(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _fingerprinted(v) for k, v in x.items() if k not in NOT_IN_FINGERPRINT}
    if isinstance(x, (list, tuple)):
        return [_fingerprinted(v) for v in x]
    return x


def _flat(x: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): x}


def writable(path: Path, flag: str) -> None:
    """The first existing ancestor of ``path`` is a writable directory."""
    p = path
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise RunDirError(f"--{flag}: {p} is a file, not a directory; choose another --{flag}")
    if not os.access(p, os.W_OK | os.X_OK):
        raise RunDirError(f"--{flag}: {p} is not writable; choose another --{flag}")


RESULT_FILES = ("metrics.json", "predictions.jsonl", "log.jsonl", "weights.jsonl", "confusion.png")


class RunDir:
    """``results/<experiment>/<run>/``, owned by the run that wrote it.

    Its config.json holds a fingerprint of the settings that affect results. `claim` (before any
    work, writes nothing): a directory with another fingerprint, or with files but no fingerprint,
    is refused unless ``overwrite``. `begin` (after the data and model loaded): removes the previous
    attempt's results (a failed run never leaves its config beside older metrics) and writes
    config.json marked incomplete. `finish` writes metrics.json and marks the run complete; only a
    complete run is `finished`."""

    def __init__(self, path: Path, settings: dict, seed: int | None, overwrite: bool = False) -> None:
        self.path, self.settings, self.seed, self.overwrite = Path(path), settings, seed, overwrite
        self.fingerprint = fingerprint(settings)

    @classmethod
    def claim(cls, path: str | Path, settings: dict, seed: int | None = None, overwrite: bool = False, flag: str = "results_dir") -> RunDir:
        run = cls(Path(path), settings, seed, overwrite)
        writable(run.path, flag)
        old = run.recorded()
        if run.path.is_dir() and any(run.path.iterdir()) and not overwrite and old.get("fingerprint") != run.fingerprint:
            if not old.get("fingerprint"):
                why = "holds files of a run without a settings fingerprint (written by an older version or by hand)"
            else:
                a, b = _flat(_fingerprinted(old.get("config", {}))), _flat(_fingerprinted(redact(settings)))
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                why = f"holds a run with other settings ({', '.join(diff[:6]) or 'fingerprint'}{' ...' if len(diff) > 6 else ''} differ)"
            raise RunDirError(f"{run.path} {why}; choose another --run_name or --results_dir, or pass --overwrite to replace it")
        return run

    def recorded(self) -> dict:
        """The config.json already in the directory ({} when absent or unreadable)."""
        try:
            return json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def begin(self) -> Path:
        if self.overwrite and self.recorded().get("fingerprint") != self.fingerprint and self.path.is_dir():
            import shutil

            shutil.rmtree(self.path)  # another run's files, checkpoints included
        self.path.mkdir(parents=True, exist_ok=True)
        for name in RESULT_FILES:
            (self.path / name).unlink(missing_ok=True)
        self._write_config(complete=False)
        return self.path

    def finish(self, metrics: dict | None = None) -> None:
        if metrics is not None:
            write_json(self.path / "metrics.json", metrics)
        self._write_config(complete=True)

    def finished(self, *needs: str) -> bool:
        """This run (same fingerprint) completed and the named artifacts exist."""
        old = self.recorded()
        return (old.get("fingerprint") == self.fingerprint and old.get("complete", False)
                and all((self.path / n).exists() for n in ("metrics.json", *needs)))

    def _write_config(self, complete: bool) -> None:
        write_json(self.path / "config.json", {"config": redact(self.settings), "fingerprint": self.fingerprint, "complete": complete,
                                               "seed": self.seed, "git_sha": git_sha(), "versions": library_versions()})


def own_dir(path: str | Path, fp: str, overwrite: bool = False, flag: str = "output_root") -> None:
    """Make ``path`` (checkpoints outside the run directory) belong to the run with fingerprint
    ``fp``: refuse one that holds another run's files, unless ``overwrite`` (then clear it)."""
    path = Path(path)
    writable(path, flag)
    mark = path / "fingerprint.txt"
    old = mark.read_text().strip() if mark.is_file() else None
    if path.is_dir() and any(path.iterdir()) and old != fp:
        if not overwrite:
            raise RunDirError(f"{path} holds checkpoints of a run with other settings; choose another --{flag} or run name, "
                              "or pass --overwrite to replace them")
        import shutil

        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    mark.write_text(fp + "\n")


def start_run(run_dir: str | Path, config: dict, seed: int | None = None) -> Path:
    """Claim ``run_dir`` for ``config`` and write its config.json at once (for callers that load
    nothing first; scripts use `RunDir`)."""
    run = RunDir.claim(run_dir, config, seed)
    return run.begin()
