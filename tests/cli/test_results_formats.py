"""Results formats as registered classes (issue 28) and cheap values (issue 31): a batch's values
encoded at once in the worker, the same bytes as one value at a time; the export written as the
run goes, the same file as one made from the journal, and nothing left behind by a killed run."""

import json
import math
import os
import pickle
import random
import signal
import zlib

import pytest

import cluster_func
from cluster_func.core.errors import UserError
from cluster_func.record import formats, results as rmod
from cluster_func.record.writer import Journal


# --- the registry --------------------------------------------------------------------------------

def test_every_module_of_the_formats_package_is_a_format_named_as_it():
    import pkgutil

    modules = sorted(m.name for m in pkgutil.iter_modules(formats.__path__) if m.name != "base")
    assert formats.names() == modules == ["jsonl", "pkl"]
    assert formats.extensions() == [".jsonl", ".pkl"]
    assert [formats.of_path(p).name for p in ("a.jsonl", "b.PKL")] == ["jsonl", "pkl"]
    assert formats.of_path("c.csv") is None


def test_a_new_format_is_one_registered_class(tmp_path):
    @formats.register
    class Lines(formats.ResultsFormat):  # a toy: "pos value" lines of ints
        name, extension = "toy", ".toy"

        def encode(self, pos, value):
            return b"%d %d\n" % (pos, value)

        def read(self, f):
            for line in f:
                yield tuple(map(int, line.split()))

    try:
        assert rmod.format_of("v.toy") == "toy" and "toy" in formats.names()
        encode = rmod.encoder(rmod.format_of("v.toy"))  # (as the workers and cluf --gather write it)
        (tmp_path / "v.toy").write_bytes(encode(0, 5) + encode(1, 6))
        assert (tmp_path / "v.toy").read_bytes() == b"0 5\n1 6\n"
        assert list(cluster_func.read_results(str(tmp_path / "v.toy"))) == [(0, 5), (1, 6)]
    finally:
        del formats.REGISTRY["toy"]
    with pytest.raises(UserError, match="must end in .jsonl"):
        rmod.format_of("v.toy")


def test_the_base_class_declares_every_method_the_formats_are_asked_for():
    # A new format is written against formats.base.ResultsFormat: the methods the run and
    # read_results call (read, records_of_file: an ownership check) are declared there, and every
    # registered format implements each method the base leaves to it.
    import inspect

    base = formats.ResultsFormat
    for method in ("encode", "encode_batch", "split", "moved", "decode", "read", "records_of_file"):
        assert callable(getattr(base, method, None)), method
    left = [m for m, f in vars(base).items() if callable(f) and "raise NotImplementedError" in inspect.getsource(f)]
    assert "read" in left and "records_of_file" in left
    for name in formats.names():
        cls = type(formats.get(name))
        assert [m for m in left if getattr(cls, m) is getattr(base, m)] == [], name


# --- a batch at once is value by value -------------------------------------------------------------

def _batches(seed):
    rnd = random.Random(seed)
    kinds = {
        "int": lambda: rnd.randint(-2**31, 2**31 - 1),
        "small": lambda: rnd.randint(0, 70000),
        "big": lambda: rnd.randint(-2**70, 2**70),
        "float": lambda: rnd.choice([rnd.random() * 10 ** rnd.randint(-300, 300), -0.0, math.inf, math.nan, 1e16]),
        "str": lambda: "".join(chr(rnd.randint(0, 0x3000)) for _ in range(rnd.randint(0, 6))),
        "bool": lambda: rnd.choice([True, False]),
        "mixed": lambda: rnd.choice([1, True, None, "x", 2.5, [1, (2, 3)], {"a": [1]}]),
    }
    for kind, make in kinds.items():
        for _ in range(20):
            n = rnd.randint(1, 40)
            start = rnd.choice([0, 70000, 2**31 - 50, 2**40])
            positions = range(start, start + n) if rnd.random() < 0.5 else sorted(rnd.sample(range(start, start + 9 * n), n))
            yield kind, positions, [make() for _ in range(n)]


@pytest.mark.parametrize("name", ["jsonl", "pkl"])
def test_a_batch_encoded_at_once_reads_as_each_value_encoded_alone(name):
    form = formats.get(name)
    for kind, positions, values in _batches(31):
        batch = form.encode_batch(positions, values)
        alone = b"".join(form.encode(p, v) for p, v in zip(positions, values))
        if name == "jsonl":
            assert batch == alone, kind  # the same text, byte for byte
        else:  # the same pickles, read back; ints below 65536 pickle shorter one at a time
            assert repr(list(form.decode(batch))) == repr(list(form.decode(alone))), kind
            if kind == "int" and positions[0] >= 70000 and all(abs(v) >= 65536 for v in values):
                assert batch == alone
        assert [p for p, _ in form.split(batch)] == list(positions)
        assert all(type(p) is int for p, _ in form.decode(batch))


@pytest.mark.parametrize("name", ["jsonl", "pkl"])
def test_a_value_that_cannot_be_written_is_left_out_of_its_batch_and_reported(name):
    form = formats.get(name)
    unwritable = (lambda: 0) if name == "pkl" else object()
    said = []
    data = form.encode_batch(range(10, 15), [1, unwritable, 3, None, 5], skip=[3],
                             report=lambda k, e: said.append((k, type(e).__name__, str(e))))
    assert list(form.decode(data)) == [(10, 1), (12, 3), (14, 5)]
    assert [k for k, _, _ in said] == [1] and said[0][1] == "ValueNotWritable"
    assert ("pickled" if name == "pkl" else "JSON cannot hold") in said[0][2]


# --- the export as the run goes ------------------------------------------------------------------

def _journal(tmp_path, fmt, out):
    return Journal(str(tmp_path / "j.journal"), str(tmp_path / "s.py"), "0/1", "round-robin", False,
                   lambda text: None, values=fmt, results_path=str(out))


def _a_run(tmp_path, fmt, spoil=None):
    """Three records of values through the journal into the results file; ``spoil(results)`` after
    the start (the export as the run goes disabled, or failing)."""
    out = tmp_path / f"v.{fmt}"
    res = rmod.Results(str(out), str(tmp_path / "j.journal"), resume=False)
    res.acquire()
    journal = _journal(tmp_path, fmt, out)
    res.start(journal)
    if spoil is not None:
        spoil(res)
    form = formats.get(fmt)
    for first in (0, 5, 10):
        positions, elements = range(first, first + 5), [("e", i) for i in range(first, first + 5)]
        journal.completed(positions, elements, values=form.encode_batch(positions, [i * i for i in positions]))
        journal.flush(sync=False)
    n = res.export(journal, None)
    journal.close(15, 0, "complete")
    res.release()
    return n, out.read_bytes(), [json.loads(line) for line in (tmp_path / "j.journal").read_bytes().splitlines()]


@pytest.mark.parametrize("fmt", ["jsonl", "pkl"])
def test_the_export_made_as_the_run_goes_is_the_one_made_from_the_journal(tmp_path, fmt, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    read_back = []
    real_export = rmod.export
    monkeypatch.setattr(rmod, "export", lambda *a, **k: read_back.append(a[0]) or real_export(*a, **k))
    live = _a_run(tmp_path / "a", fmt)
    assert read_back == []  # a fresh run does not read the journal again for its export
    opened = []
    real_open = rmod._LiveExport.open
    monkeypatch.setattr(rmod._LiveExport, "open", classmethod(lambda cls, folder: opened.append(folder)))
    from_journal = _a_run(tmp_path / "b", fmt)  # (no O_TMPFILE: the export is made at the end)
    monkeypatch.setattr(rmod._LiveExport, "open", real_open)
    assert read_back == [str(tmp_path / "b" / "j.journal")]
    assert opened and live[0] == from_journal[0] == 15 and live[1] == from_journal[1]
    assert list(cluster_func.read_results(str(tmp_path / "a" / f"v.{fmt}"))) == [(i, i * i) for i in range(15)]
    for folder, (_, data, records) in (("a", live), ("b", from_journal)):
        export = [r for r in records if r.get("t") == "results"]
        assert len(export) == 1 and export[0]["size"] == len(data) and export[0]["crc"] == f"{zlib.crc32(data):08x}"
        assert export[0]["sha256"] == rmod.file_digest(tmp_path / folder / f"v.{fmt}")
        assert not [p for p in os.listdir(tmp_path / folder) if ".tmp-" in p]


@pytest.mark.parametrize("fmt", ["jsonl", "pkl"])
def test_an_export_whose_writing_failed_during_the_run_is_made_from_the_journal(tmp_path, fmt):
    def full_disk(res):
        assert res.live is not None  # (this file system has unnamed files)
        res.live.close()  # what a failed write does: the file is dropped...
        res.live.error = OSError(28, "No space left on device")  # ...and the error kept

    n, data, _ = _a_run(tmp_path, fmt, spoil=full_disk)
    assert n == 15 and list(cluster_func.read_results(str(tmp_path / f"v.{fmt}"))) == [(i, i * i) for i in range(15)]


def test_a_fresh_runs_file_is_byte_for_byte_the_one_a_resume_makes_from_the_journal(clum, tmp_path):
    clum.script("w.py", """\
        def target(i):
            return [i, str(i)] if i % 7 else i / 3
        args = range(3000)
        """)
    out, j = tmp_path / "v.jsonl", tmp_path / "w.journal"
    assert clum.run("w.py", "-p", "2", "--journal", j, "--results", out).returncode == 0
    fresh = out.read_bytes()
    r = clum.run("w.py", "-p", "2", "--journal", j, "--results", out, "--resume")
    assert r.returncode == 0 and "skipped 3000 calls" in r.stderr, r.stderr
    assert out.read_bytes() == fresh
    assert list(cluster_func.read_results(str(out))) == [(i, [i, str(i)] if i % 7 else i / 3) for i in range(3000)]


def test_a_run_killed_with_its_export_half_written_leaves_no_file_behind(clum, procs, tmp_path):
    clum.script("slow.py", """\
        import time
        def target(x):
            time.sleep(0.002)
            rec("E", x)
            return x * x
        args = range(5000)
        """)
    out, j = tmp_path / "res" / "v.pkl", tmp_path / "s.journal"
    p = clum.popen("slow.py", "-p", "2", "--results", out, "--journal", j)
    clum.signal_when(p, lambda: clum.count_lines(prefix="E") >= 1000, signal.SIGKILL, group=True)
    assert os.listdir(tmp_path / "res") == ["v.pkl.lock"]  # no temporary file, named or half-written
    r = clum.run("slow.py", "-p", "2", "--results", out, "--journal", j, "--resume")
    assert r.returncode == 0, r.stderr
    assert list(cluster_func.read_results(str(out))) == [(i, i * i) for i in range(5000)]
    with open(out, "rb") as f:  # the records are pickles of (pos, value)
        assert pickle.load(f) in {(i, i * i) for i in range(5000)}
