"""The linter's configuration (pyproject.toml, [tool.ruff]) holds for the whole tree, so that
style does not drift: this test runs it as part of the test command.  So does the type checker's
([tool.mypy]: every function of the package annotated, and the bodies checked)."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_tree_passes_the_linter():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    r = subprocess.run([ruff, "check", "--output-format", "concise", "cluster_func", "tests", "benchmarks"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60  # from its def line to its last, docstring included


def test_no_module_over_600_lines_and_no_function_over_60():
    import ast

    too_long = []
    for path in sorted((ROOT / "cluster_func").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {text.count(chr(10))} lines (split it along its seams)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {length} lines")
    assert not too_long, "over the limits (at most 600 lines a module, 60 a function):\n" + "\n".join(too_long)


def _imports(path):
    """The modules a module of the package imports (absolute names), at any depth of it."""
    import ast

    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return found


# (the folder, the packages it may not import): docs/development.md, "The walls"
WALLS = {
    "cluster_func/local": ("cluster_func.cluster", "cluster_func.api"),
    "cluster_func/cluster": ("cluster_func.local", "cluster_func.api"),
    "cluster_func/record": ("cluster_func.local", "cluster_func.cluster", "cluster_func.api"),
    "cluster_func/core": ("cluster_func.local", "cluster_func.cluster", "cluster_func.api", "cluster_func.record"),
    "cluster_func/schedulers": ("cluster_func.local", "cluster_func.cluster", "cluster_func.api"),
}


def test_the_walls_hold_no_folder_imports_what_it_may_not_and_only_the_command_runner_runs_commands():
    breaches = []
    for path in sorted((ROOT / "cluster_func").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        imports = _imports(path)
        for folder, banned in WALLS.items():
            if name.startswith(folder + "/"):
                breaches += [f"{name} imports {m}" for m in sorted(imports)
                             if any(m == b or m.startswith(b + ".") for b in banned)]
        if name != "cluster_func/core/commands.py" and imports & {"subprocess", "os.system", "os.popen"}:
            breaches.append(f"{name} runs a command itself, not through cluster_func.core.commands")
    assert not breaches, "\n".join(breaches)


def test_plain_clum_loads_no_scheduler_module(tmp_path):
    script = tmp_path / "tiny.py"
    script.write_text("def target(x):\n    return x\nargs = range(3)\n")
    code = ("import sys\nfrom cluster_func.cli import clum_main\n"
            f"sys.argv = ['clum', {str(script)!r}, '-p', '1', '--quiet']\n"
            "try:\n    clum_main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('cluster_func.schedulers.')))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout


def test_the_package_passes_the_type_checker(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the test extra: pip install -e .[test])")
    # A cache of its own (a few seconds cold): nothing is written in the tree.
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", "--cache-dir",
                        str(tmp_path / "mypy_cache"), "--no-error-summary", "--hide-error-context"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, "mypy (pyproject.toml, [tool.mypy]) found:\n" + r.stdout + r.stderr
