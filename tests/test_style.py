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


def test_the_package_passes_the_type_checker(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the test extra: pip install -e .[test])")
    # A cache of its own (a few seconds cold): nothing is written in the tree.
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", "--cache-dir",
                        str(tmp_path / "mypy_cache"), "--no-error-summary", "--hide-error-context"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, "mypy (pyproject.toml, [tool.mypy]) found:\n" + r.stdout + r.stderr
