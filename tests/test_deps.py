"""dvc.yaml lists, for every stage, exactly the project sub-packages (or modules) its script imports (transitively).

A module missing from `deps` means editing it does not rerun the stage (stale results); a listed module the
stage does not import reruns it for nothing. Imports are read with `ast` from the stage script on, function
bodies included (the sweep imports TensorFlow-heavy modules inside functions); a dep on a folder such as
`tlpipe/core` covers every module in it, and must cover one the stage imports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

PACKAGE = "tlpipe"
SCRIPT = re.compile(r"\bpython3?\s+(?:-m\s+([\w.]+)|(\S+\.py))")


def module_file(dotted: str, search: list[Path]) -> Path | None:
    """The project file of module `dotted` (a .py or a package's __init__.py) on `search`, or None."""
    for base in search:
        parts = dotted.split(".")
        for candidate in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


def imported_files(path: Path, search: list[Path]) -> set[Path]:
    """The project files `path` imports directly, wherever the import statement is (functions included)."""
    found = set()
    package = path.parent
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                # `import a.b.c` runs a/__init__, a/b/__init__ and a/b/c
                found |= {module_file(".".join(parts[: i + 1]), search) for i in range(len(parts))}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package up `level - 1` packages
                base = package
                for _ in range(node.level - 1):
                    base = base.parent
                bases, prefix = [base], node.module or ""
            else:
                bases, prefix = search, node.module
            parts = prefix.split(".") if prefix else []
            found |= {module_file(".".join(parts[: i + 1]), bases) for i in range(len(parts))}
            for alias in node.names:  # `from pkg import module` imports a submodule
                found.add(module_file(".".join([*parts, alias.name]), bases))
    return {f for f in found if f is not None}


def is_empty_init(path: Path) -> bool:
    """A package __init__.py holding at most a docstring: it runs on every import but cannot change a result."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return path.name == "__init__.py" and all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                              for s in body)


def project_imports(script: Path, root: Path = ROOT) -> set[str]:
    """Repo-relative paths of the project modules `script` imports, transitively (the script excluded).

    Searched like `python stages/x.py` from `root`: the script's folder first, then `root` (the installed project).
    """
    search = [script.parent, root]
    seen, todo = set(), [script]
    while todo:
        for found in imported_files(todo.pop(), search):
            if found not in seen:
                seen.add(found)
                todo.append(found)
    return {f.relative_to(root).as_posix() for f in seen - {script} if not is_empty_init(f)}


def stage_scripts(stage: dict, root: Path = ROOT) -> list[Path]:
    """The Python files a stage's cmd (a string or a list of them) runs."""
    commands = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
    scripts = []
    for command in commands:
        for module, file in SCRIPT.findall(command):
            path = module_file(module, [root]) if module else root / file
            if path is not None and path not in scripts:
                scripts.append(path)
    return scripts


def dep_problems(name: str, stage: dict, root: Path = ROOT) -> list[str]:
    """What is wrong with `stage`'s deps: project modules it imports but does not list, and ones it lists but
    does not import (a matrix stage is checked once: its items share cmd and deps)."""
    scripts = stage_scripts(stage, root)
    if not scripts:
        return []
    deps = {str(d).rstrip("/") for d in stage.get("deps", [])}
    problems = [f"stage '{name}': runs {s.relative_to(root).as_posix()}, which is not in its deps"
                for s in scripts if s.relative_to(root).as_posix() not in deps]
    imported = set().union(*(project_imports(s, root) for s in scripts))
    for module in sorted(imported):
        covered = any(module == d or module.startswith(f"{d}/") for d in deps)
        if not covered:
            problems.append(f"stage '{name}': imports {module}, which is not in its deps")
    # a folder dep (a sub-package) covers whatever the stage imports from it, and must cover something
    for dep in sorted(d for d in deps if d == PACKAGE or d.startswith(f"{PACKAGE}/")):
        if not any(module == dep or module.startswith(f"{dep}/") for module in imported):
            problems.append(f"stage '{name}': lists {dep} in its deps but does not import it")
    return problems


# Both pipelines: the study's stages run from the repository root (wdir: ..), so their paths are the same.
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"] | {
    f"study/dvc.yaml:{name}": stage
    for name, stage in yaml.safe_load((ROOT / "study/dvc.yaml").read_text(encoding="utf-8"))["stages"].items()}


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_are_exactly_its_imports(name):
    problems = dep_problems(name, STAGES[name])
    assert not problems, "dvc.yaml deps:\n" + "\n".join(problems)


def test_every_stage_runs_a_script_the_check_can_read():
    for name, stage in STAGES.items():
        assert stage_scripts(stage), f"stage '{name}': no `python <file>.py` in its cmd, so its deps go unchecked"


def test_imports_are_followed_through_functions_and_from_imports(tmp_path):
    files = {
        "stages/s.py": "import argparse\nfrom pkg.a import f\n\ndef main():\n    from pkg import b\n",
        "pkg/__init__.py": '"""docstring only"""\n',
        "pkg/a.py": "import numpy\nimport pkg.c as c\n",
        "pkg/b.py": "from .d import g\n",
        "pkg/c.py": "C = 1\n",
        "pkg/d.py": "def g():\n    from pkg import e\n",
        "pkg/e.py": "E = 1\n",
        "pkg/unused.py": "U = 1\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert project_imports(tmp_path / "stages/s.py", tmp_path) == {"pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/d.py",
                                                                   "pkg/e.py"}
    stage = {"cmd": ["python stages/s.py --x ${item.x}"], "deps": ["stages/s.py", "pkg/a.py", "tlpipe/x.py"]}
    assert dep_problems("s", stage, tmp_path) == [
        "stage 's': imports pkg/b.py, which is not in its deps",
        "stage 's': imports pkg/c.py, which is not in its deps",
        "stage 's': imports pkg/d.py, which is not in its deps",
        "stage 's': imports pkg/e.py, which is not in its deps",
        "stage 's': lists tlpipe/x.py in its deps but does not import it",
    ]
    assert dep_problems("s", stage | {"deps": ["stages/s.py", "pkg"]}, tmp_path) == []
