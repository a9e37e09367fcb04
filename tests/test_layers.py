"""The import rules of docs/architecture.md, checked on the source: every import, at module level or
inside a function, goes from a higher layer to a lower one, so there are no cycles between parts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: each part of the package and its layer; a part may import only parts of lower layers (and
#: itself). A new module or package must be placed here (and in docs/architecture.md).
LAYERS: dict[str, int] = {
    "crabser": 0,  # the package itself: its version
    "errors": 0,
    "io": 1,
    "prediction": 1,  # the output schema and the label rule
    "parallel": 1,
    "devices": 1,
    "config": 2,  # the settings' schema and defaults: every layer above reads it
    "data": 3,
    "losses": 3,
    "models": 3,
    "evaluation": 3,
    "pretrained": 3,
    "features": 4,
    "runs": 4,
    "segment": 4,
    "tables": 4,
    "predictor": 5,  # what every recognizer shares, without torch
    "onnx_runtime": 6,
    "training": 5,
    "pipeline": 6,
    "crossval": 7,
    "inference": 7,
    "loading": 8,
    "onnx_export": 8,
    "cross_corpus": 8,
    "experiment": 8,
    "stacking": 8,
    "serve": 9,
    "cli": 10,
}
#: parts that import nothing of crabser beyond these (pure computations on tensors and arrays)
PURE = {"losses": {"errors"}, "evaluation.metrics": {"errors"}, "evaluation.bootstrap": {"errors"}}


def part(module: str) -> str:
    """``crabser.training.fit`` -> ``training``; ``crabser`` -> ``crabser``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "crabser"


def crabser_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every crabser import in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crabser"):
            if node.module == "crabser":  # from crabser import pipeline
                found += [(node.lineno, f"crabser.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("crabser")]
    return found


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(SRC).with_suffix("").parts)
    return name.removesuffix(".__init__")


def all_imports() -> list[tuple[str, int, str]]:
    """(importing module, line, imported module) over the whole package."""
    return [
        (module_name(path), line, target)
        for path in sorted((SRC / "crabser").rglob("*.py"))
        for line, target in crabser_imports(path)
    ]


def test_every_part_has_a_layer():
    parts = {part(module_name(path)) for path in (SRC / "crabser").rglob("*.py")}
    assert parts - set(LAYERS) == set(), "place the new part in LAYERS and docs/architecture.md"


def test_imports_go_down_the_layers():
    upward = [
        f"{source}:{line} imports {target}"
        for source, line, target in all_imports()
        if part(source) != part(target) and LAYERS[part(target)] >= LAYERS[part(source)]
    ]
    assert upward == []


def test_nothing_imports_the_cli():
    assert [s for s, _, t in all_imports() if part(t) == "cli" and part(s) != "cli"] == []


@pytest.mark.parametrize("pure", sorted(PURE))
def test_pure_parts_import_only_errors(pure):
    inside = [
        (s, t)
        for s, _, t in all_imports()
        if s == f"crabser.{pure}" or s.startswith(f"crabser.{pure}.")
    ]
    allowed = {f"crabser.{p}" for p in PURE[pure]}
    outside = [
        (s, t) for s, t in inside if not t.startswith(f"crabser.{pure}") and t not in allowed
    ]
    assert outside == []


def test_the_rules_catch_an_upward_import(tmp_path):
    """The checker itself: a model importing a data loader is found."""
    file = tmp_path / "bad.py"
    file.write_text("def f():\n    from crabser.data.manifest import Manifest\n")
    ((line, target),) = crabser_imports(file)
    assert line == 2 and LAYERS[part(target)] >= LAYERS["models"]
