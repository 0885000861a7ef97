"""Collected return values (issue 14): ``clum --results PATH``, ``cluster_func.read_results``,
through the real command."""

import json
import os
import pickle
import signal

import pytest

import cluster_func
from cluster_func.record import journal as jmod
from cluster_func.record import results as rmod

SWEEP = """\
    import os
    def target(x, y=1):
        rec("E", x)
        return {"x": x, "score": x * y / 4, "pair": (x, y)}
    def args():
        pairs = [(i, i % 3) for i in range(int(os.environ.get("N", "50")))]
        if os.environ.get("GEN"):
            return (p for p in pairs)
        return pairs
    """


@pytest.mark.parametrize("fmt", ["jsonl", "pkl"])
@pytest.mark.parametrize("gen", [False, True], ids=["list", "generator"])
def test_every_calls_value_is_written_with_its_position(clum, tmp_path, fmt, gen):
    clum.script("sweep.py", SWEEP)
    out = tmp_path / f"values.{fmt}"
    r = clum.run("sweep.py", "-p", "2", "--results", out, env={"GEN": "1" if gen else ""})
    assert r.returncode == 0, r.stderr
    got = list(cluster_func.read_results(str(out)))
    assert [p for p, _ in got] == list(range(50))
    for p, v in got:
        pair = [p, p % 3] if fmt == "jsonl" else (p, p % 3)  # tuples become lists in JSON
        assert v == {"x": p, "score": p * (p % 3) / 4, "pair": pair}


def test_jsonl_is_one_object_a_line(clum, tmp_path):
    clum.script("sweep.py", SWEEP)
    out = tmp_path / "values.jsonl"
    assert clum.run("sweep.py", "--results", out, env={"N": 5}).returncode == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(rec["pos"] for rec in lines) == list(range(5)) and all(set(rec) == {"pos", "value"} for rec in lines)


def test_pkl_is_a_stream_of_position_value_pickles(clum, tmp_path):
    clum.script("sweep.py", SWEEP)
    out = tmp_path / "values.pkl"
    assert clum.run("sweep.py", "--results", out, env={"N": 5}).returncode == 0
    recs = []
    with open(out, "rb") as f:
        while True:
            try:
                recs.append(pickle.load(f))
            except EOFError:
                break
    assert sorted(p for p, _ in recs) == list(range(5))


def test_numpy_values_become_numbers_and_lists_in_json(clum, tmp_path):
    clum.script("np.py", """\
        import numpy as np
        def target(x):
            return np.float32(x) / 2, np.arange(x), np.int64(x)
        args = range(4)
        """)
    out = tmp_path / "v.jsonl"
    assert clum.run("np.py", "--results", out).returncode == 0
    assert dict(cluster_func.read_results(str(out)))[3] == [1.5, [0, 1, 2], 3]


def test_a_value_json_cannot_hold_fails_that_call_with_its_type_and_the_pkl_hint(clum, tmp_path):
    clum.script("obj.py", """\
        class Model:
            pass
        def target(x):
            return Model() if x == 2 else x
        args = range(5)
        """)
    out = tmp_path / "v.jsonl"
    r = clum.run("obj.py", "--results", out)
    assert r.returncode == 1
    assert "position 2" in r.stderr and "Model" in r.stderr and ".pkl" in r.stderr
    assert "cluster_func" not in r.stderr.split("position 2", 1)[1].split("\n\n")[0]  # no frame of ours
    assert [p for p, _ in cluster_func.read_results(str(out))] == [0, 1, 3, 4]
    out_pkl = tmp_path / "v.pkl"
    assert clum.run("obj.py", "--results", out_pkl).returncode == 0


def test_a_killed_run_resumed_has_every_positions_value_once(clum, tmp_path):
    clum.script("slow.py", """\
        import time
        def target(x):
            time.sleep(0.01)
            rec("E", x)
            return x * x
        args = range(400)
        """)
    out, j = tmp_path / "v.jsonl", tmp_path / "s.journal"
    p = clum.popen("slow.py", "-p", "2", "--results", out, "--journal", j)
    clum.signal_when(p, lambda: clum.count_lines(prefix="E") >= 100, signal.SIGKILL, group=True)
    # killed, the run wrote no results file, but every call its journal records as completed
    # carries its value in the same record
    assert not out.exists()
    recorded, with_values = set(), set()
    for _, rec in jmod.ok_records(str(j)):
        recorded.update(jmod.decode_positions(rec["pos"]))
        with_values.update(p for p, _ in rmod._split(jmod.record_values(rec), "jsonl"))
    assert recorded and recorded == with_values
    assert {p for p, _ in cluster_func.read_results(str(j))} == recorded  # a journal reads as its values
    r = clum.run("slow.py", "-p", "2", "--results", out, "--journal", j, "--resume")
    assert r.returncode == 0, r.stderr
    assert list(cluster_func.read_results(str(out))) == [(i, i * i) for i in range(400)]


def test_a_new_run_keeps_the_old_results_as_prev(clum, tmp_path):
    clum.script("sweep.py", SWEEP)
    out = tmp_path / "v.jsonl"
    assert clum.run("sweep.py", "--results", out, env={"N": 3}).returncode == 0
    assert clum.run("sweep.py", "--results", out, env={"N": 4}).returncode == 0
    assert len(list(cluster_func.read_results(str(out)))) == 4
    assert len(list(cluster_func.read_results(str(out) + ".prev"))) == 3


def test_bins_run_on_several_machines_are_read_back_together(clum, tmp_path):
    clum.script("sweep.py", SWEEP)
    outs = [tmp_path / f"b{i}.jsonl" for i in range(3)]
    for i, out in enumerate(outs):
        assert clum.run("sweep.py", "--bins", f"{i}/3", "--results", out).returncode == 0
    got = list(cluster_func.read_results(*map(str, outs)))
    assert [p for p, _ in got] == list(range(50))
    assert list(cluster_func.read_results([str(o) for o in outs])) == got


def test_a_directory_as_results_is_a_usage_error(clum, clean_error, tmp_path):
    clum.script("sweep.py", SWEEP)
    clean_error(clum.run("sweep.py", "--results", tmp_path), "is a directory")


@pytest.mark.parametrize("name", ["v.csv", "v", "v.json"])
def test_a_results_path_of_another_format_is_a_usage_error(clum, clean_error, tmp_path, name):
    clum.script("sweep.py", SWEEP)
    clean_error(clum.run("sweep.py", "--results", tmp_path / name), ".jsonl", ".pkl")
    assert clum.evidence() == []


def test_a_file_that_is_not_a_results_file_is_never_touched(clum, clean_error, tmp_path):
    clum.script("sweep.py", SWEEP)
    out = tmp_path / "notes.jsonl"
    out.write_text('{"event": "mine"}\n')
    clean_error(clum.run("sweep.py", "--results", out), "not a results file")
    assert out.read_text() == '{"event": "mine"}\n' and not os.path.exists(str(out) + ".prev")


def test_results_in_clum_options(clum, tmp_path):
    out = tmp_path / "opt.jsonl"
    clum.script("opt.py", f"""\
        clum_options = {{"results": {str(out)!r}}}
        def target(x):
            return -x
        args = range(3)
        """)
    assert clum.run("opt.py").returncode == 0
    assert list(cluster_func.read_results(str(out))) == [(0, 0), (1, -1), (2, -2)]


def test_a_record_that_names_a_format_but_carries_no_values_is_skipped_as_malformed(clum, tmp_path):
    # A completed-calls line with "f" but no "v" (edited by hand, or damaged) is malformed: it is
    # skipped like a torn line, and its calls run again; a resume that collects values does not
    # take it as a record with values (there are none to export).
    clum.script("sq.py", """\
        def target(x):
            rec("E", x)
            return x * x
        args = range(6)
        """)
    out, j = tmp_path / "v.jsonl", tmp_path / "s.journal"
    assert clum.run("sq.py", "--results", out, "--journal", j).returncode == 0
    lines = j.read_bytes().split(b"\n")
    oks = [k for k, line in enumerate(lines) if line.startswith(b'{"t":"ok"')]
    assert oks
    for k in oks:
        rec = json.loads(lines[k])
        del rec["v"], rec["vc"]
        lines[k] = json.dumps(rec, separators=(",", ":")).encode()
    j.write_bytes(b"\n".join(lines))
    assert [r for _, r in jmod.ok_records(str(j))] == []  # (read as malformed: skipped)
    r = clum.run("sq.py", "--results", out, "--journal", j, "--resume")
    assert r.returncode == 0, r.stderr
    assert list(cluster_func.read_results(str(out))) == [(i, i * i) for i in range(6)]
