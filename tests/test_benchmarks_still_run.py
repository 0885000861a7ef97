"""The benchmarks that drive the package's own functions (not its commands) still run against it:
a small size of each, so that a change of an internal interface breaks a test, not the next
person's benchmark run.  Figures are printed by the benchmarks themselves, never checked here."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_continuation_benchmark_continues_every_bin_with_the_real_continue_bin():
    bench = _load("continuation_bench")
    rows = bench.run(quick=True, bins=40, workers=2)  # (it checks that each bin continued once)
    _, said = bench.verdict(rows)
    assert "40 of 40 bins" in said, said


def test_the_wait_benchmark_polls_a_fake_run_with_the_real_wait():
    bench = _load("wait_bench")
    rows = bench.run(quick=True, bins=40, calls_per_bin=5, polls=3)
    assert any(r["what"].startswith("cluf --wait: first poll") for r in rows), rows
    assert any(r["what"].startswith("cluf --wait: a later poll") for r in rows), rows
