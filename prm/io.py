"""Reading JSON/JSONL input with locations for error messages; atomic JSON/JSONL writing; paths."""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prm.schema import DataError

REPO_ROOT = Path(__file__).resolve().parent.parent


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


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _is_jsonl(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    return name.endswith((".jsonl", ".ndjson"))


def iter_json_rows(path: str | Path, bad_lines: str = "raise") -> Iterator[tuple[str, Any]]:
    """Yield ``(where, row)`` for every row of a JSON or JSONL file (optionally ``.gz``).

    ``where`` is ``path:LINE`` for JSONL and ``path[INDEX]`` for the items of a JSON array (a JSON
    file holding one object is one row). Invalid JSON raises DataError at its line; with
    ``bad_lines="yield"`` an invalid JSONL line is yielded as ``(where, DataError)`` instead, so a
    lenient reader can count it and go on.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    with _open_text(path) as f:
        if _is_jsonl(path):
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    err = DataError(None, "invalid JSON", e.msg, where=f"{path}:{n}")
                    if bad_lines != "yield":
                        raise err from None
                    row = err
                yield f"{path}:{n}", row
            return
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":
            raise DataError(None, "invalid JSON", e.msg, where=f"{path}:{e.lineno}") from None
        # Several JSON values one after another (JSON Lines named .json, or concatenated
        # pretty-printed objects): read them one by one, each located at its first line.
        yield from _iter_concatenated(text, path)
        return
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
        yield f"{path}:{line}", row


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (a temp file renamed over the target), so a killed job never leaves
    half a file behind."""
    _atomic_write(Path(path), json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write rows as JSON Lines atomically; returns how many rows were written."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    _atomic_write(Path(path), "".join(x + "\n" for x in lines))
    return len(lines)


def append_jsonl(path: str | Path, row: Any) -> None:
    """Append one row and flush it to disk (resumable outputs of long jobs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


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

SECRET_HINTS = ("api_key", "apikey", "token", "secret", "password")


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
        return {k: ("<redacted>" if any(h in str(k).lower() for h in SECRET_HINTS) and v else redact(v)) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [redact(v) for v in cfg]
    return cfg


def start_run(run_dir: str | Path, config: dict, seed: int | None = None) -> Path:
    """Create ``results/<exp>/<run>/`` and write config.json (resolved config, git SHA, library
    versions, seed)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", {"config": redact(config), "seed": seed, "git_sha": git_sha(), "versions": library_versions()})
    return run_dir
