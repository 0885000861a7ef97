"""``cluf --results`` on the real Slurm of tests/schedulers/up.sh, gathered by ``cluf --gather``
and read back by ``cluster_func.read_results`` (issue 14)."""

import json
import sys
from pathlib import Path

import pytest

try:
    import cluf_support as cs
    import scheduler_support as ss
except ImportError:  # tests/ is not on sys.path when run without the rootdir conftest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cluf_support as cs
    import scheduler_support as ss

import cluster_func

pytestmark = pytest.mark.timeout(180)


def test_a_slurm_run_with_results_is_gathered_in_position_order(tmp_path):
    ss.require_slurm()
    script = cs.write_target(tmp_path, "sq.py", extra="""\
        def target(x):
            return {"x": x, "square": x * x}
        args = range(25)
        """)
    env = cs.base_env(tmp_path)
    cs.ok(cs.run_cluf(script, "-n", "3", "--results", "jsonl", "-j", "jobs", "--scheduler", "slurm",
                      cwd=tmp_path, env=env))
    manifest = json.loads(next((tmp_path / "jobs").glob("*.manifest.json")).read_text())
    ss.wait_slurm_jobs([j["id"] for j in manifest["jobs"].values()])
    r = cs.run_cluf("--gather", "jobs", "-o", tmp_path / "all.jsonl", cwd=tmp_path, env=env)
    cs.ok(r)
    assert "gathered 25 values" in r.stdout
    got = list(cluster_func.read_results(str(tmp_path / "all.jsonl")))
    assert got == [(x, {"x": x, "square": x * x}) for x in range(25)]
    assert list(cluster_func.read_results(str(tmp_path / "jobs"))) == got
    # -o never overwrites a file: not a user's, not even one an earlier --gather wrote
    before = (tmp_path / "all.jsonl").read_bytes()
    r = cs.run_cluf("--gather", "jobs", "-o", tmp_path / "all.jsonl", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "never overwrites" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "all.jsonl").read_bytes() == before


def test_gather_says_how_many_positions_are_missing_and_exits_1(tmp_path):
    ss.require_slurm()
    script = cs.write_target(tmp_path, "sq.py", extra="""\
        def target(x):
            if x == 4:
                raise ValueError("no value")
            return x
        args = range(9)
        """)
    env = cs.base_env(tmp_path)
    cs.ok(cs.run_cluf(script, "-n", "3", "--results", "pkl", "-j", "jobs", "--scheduler", "slurm",
                      cwd=tmp_path, env=env))
    manifest = json.loads(next((tmp_path / "jobs").glob("*.manifest.json")).read_text())
    ss.wait_slurm_jobs([j["id"] for j in manifest["jobs"].values()])
    r = cs.run_cluf("--gather", "jobs", cwd=tmp_path, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "gathered 8 values" in r.stdout and "1 positions have no value" in r.stdout
    out = next((tmp_path / "jobs").glob("sq-3.results.pkl"))
    assert [p for p, _ in cluster_func.read_results(str(out))] == [0, 1, 2, 3, 5, 6, 7, 8]
