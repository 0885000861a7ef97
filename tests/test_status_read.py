"""cluf's status read of the bins' journals (issue 31): counting checks many completed-calls
lines at once, and a --wait poll reads on from where the last one stopped.  Whatever the lines,
the counts must be the ones that reading the journal line by line gives."""

import json
import os
import random

import pytest

from cluster_func.cluster import status
from cluster_func.core.errors import UserError
from cluster_func.record import journal as jmod


def line_by_line(path, incremental=False, state=None):
    """The journal read one line at a time through json.loads and _parse (the reference)."""
    st = state or jmod.JournalState()
    with open(path, "rb") as f:
        if st.size:
            f.seek(st.size)
        else:
            first = f.readline()
            st.size = len(first)
            st.format, st.header = jmod._header(first)
            if st.format is None:
                return st
        for raw in f:
            if not raw.endswith(b"\n"):
                st.bad += 0 if incremental else 1
                break
            st.size += len(raw)
            jmod._line(st, raw, False)
    return st


def ok(pos, count=1, step=3, c=True, d=None, values=None, **spaces):
    rec = {"t": "ok", "pos": [[pos, count, step]]}
    if c:
        rec["c"] = "0123abcd1c"
    if d is not None:
        rec["d"] = d
    text = json.dumps(rec, **({} if spaces else {"separators": (",", ":")}))
    if values is not None:
        text = text[:-1] + ',"f":"jsonl","vc":"0badc0de","v":"' + values + '"}'
    return text + "\n"


HEADER = json.dumps({"cluster_func_journal": 2, "script": "/s.py", "bins": "0/3", "mode": "round-robin",
                     "created": 1.0}, separators=(",", ":")) + "\n"
START = '{"t":"start","time":1.0,"pid":7,"resume":false}\n'
END = '{"t":"end","done":3,"failed":0,"status":"complete"}\n'
FAIL = '{"t":"fail","pos":4,"attempt":0,"final":true,"type":"ValueError","msg":"no","args":"(4,)"}\n'

# Lines of every kind: the writer's shapes, and the shapes the fast check must leave to _parse.
LINES = [
    ok(0), ok(3, 5), ok(6, 1, d="ab" * 8), ok(9, 2, d="cd" * 16), ok(12, values="eyJwb3MiOjB9Cg=="),
    ok(15, 2, d="ef" * 8),             # too few digests: bad
    ok(18, 1, d="0" * 15),            # not a whole digest: bad
    ok(21, spaces=True),               # json.dumps's spaces: good, by _parse
    '{"t":"ok","pos":[[0,1,3],[9,2,3]],"c":"0123abcd1c"}\n',  # two runs: good, by _parse
    '{"t":"ok","pos":[[-1,1,3]],"c":"0123abcd1c"}\n',         # a negative position: bad
    '{"t":"ok","pos":[[0,0,3]],"c":"0123abcd1c"}\n',          # no call: bad
    '{"t":"ok","pos":[[01,1,3]],"c":"0123abcd1c"}\n',         # not JSON: bad
    '{"t":"ok","pos":[[0,1,3]],"c":"0123ABCD1c"}\n',          # upper-case check: bad
    '{"t":"ok","pos":[[0,1,3]],"c":"0123abcd"}\n',            # a check too short: bad
    '{"t":"ok","pos":[[0,1,3]],"c":"0123abcd1c"',             # torn, then joined to the next line
    '{"t":"ok","pos":[[0,1,3]],"c":"0123abcd1c","f":"csv","vc":"00000000","v":""}\n',  # unknown format: bad
    '{"t":"ok","pos":[[0,1,3]],"c":"0123abcd1c","v":"AAAA"}\n',   # values without a format: bad
    '{"t":"ok","pos":[[7,1,3]],"c":"0123abcd1c","x":1}\n',    # an unknown key: good, by _parse
    '{"t":"ok","pos":[[7,1,3]]}\n',                            # no check (hash mode has d): good
    "\n", "garbage\n", START, END, FAIL,
    '{"t":"results","path":"r.jsonl","ino":1,"size":2,"mtime_ns":3}\n',
    '{"t":"end","status":"exploded"}\n',
]


def fields(st):
    return {k: v for k, v in vars(st).items()}


def test_counting_fast_gives_the_counts_of_reading_line_by_line(tmp_path):
    rng = random.Random(31)
    for trial in range(300):
        body = [rng.choice(LINES) if rng.random() < 0.3 else ok(3 * k, rng.choice((1, 1, 4))) for k in
                range(rng.randrange(0, 40))]
        tail = rng.choice(["", "", '{"t":"ok","pos":[[0,1', ok(99)[:-1]])
        path = tmp_path / f"j{trial}.journal"
        path.write_text(HEADER + "".join(body) + tail)
        assert fields(jmod.read(str(path))) == fields(line_by_line(path)), (trial, body, tail)


def test_a_long_journal_read_in_chunks_counts_as_line_by_line(tmp_path, monkeypatch):
    monkeypatch.setattr(jmod, "_CHUNK", 97)  # lines cut across reads everywhere
    body = [ok(3 * k, 1 + k % 3) for k in range(200)]
    body[77] = LINES[5]
    body[150:150] = [START, FAIL, LINES[14] + "\n", ok(1, values="QUJD" * 40)]
    path = tmp_path / "long.journal"
    path.write_text(HEADER + START + "".join(body) + END)
    st = jmod.read(str(path))
    assert fields(st) == fields(line_by_line(path))
    assert st.bad == 2 and st.runs == 2 and st.last_status == "complete"


def test_incremental_reads_in_any_pieces_end_with_the_counts_of_one_read(tmp_path):
    text = HEADER + START + "".join(ok(3 * k, 2) for k in range(30)) + FAIL + LINES[6] + END
    path = tmp_path / "grow.journal"
    rng = random.Random(5)
    for trial in range(30):
        cuts = sorted(rng.sample(range(len(HEADER) + 1, len(text)), 6)) + [len(text)]
        st = jmod.JournalState()
        for cut in cuts:
            path.write_text(text[:cut])
            st = jmod.read(str(path), state=st, incremental=True)
        assert fields(st) == fields(line_by_line(path)), (trial, cuts)


def test_a_journal_moved_aside_and_started_afresh_is_read_from_its_start(tmp_path):
    path = str(tmp_path / "bin.journal")
    with open(path, "w") as f:
        f.write(HEADER + START + ok(0))
    cache = {}
    st, _ = status._journal(path, cache)
    assert st.completed_total == 1
    os.rename(path, path + ".prev")  # a new run: another file, longer than the first
    with open(path, "w") as f:
        f.write(HEADER + START + "".join(ok(3 * k, 1) for k in range(5)) + END)
    st, size = status._journal(path, cache)
    assert (st.completed_total, st.runs, st.last_status, size) == (5, 1, "complete", os.path.getsize(path))


def test_a_poll_reads_only_what_was_appended_and_nothing_when_nothing_was(tmp_path, monkeypatch):
    path = str(tmp_path / "bin.journal")
    with open(path, "w") as f:
        f.write(HEADER + START + ok(0) + '{"t":"ok","pos":[[3,1')  # a line still being written
    cache = {}
    assert status._journal(path, cache)[0].completed_total == 1
    with open(path, "a") as f:
        f.write(',3]],"c":"0123abcd1c"}\n' + END)
    st, _ = status._journal(path, cache)
    assert (st.completed_total, st.bad, st.last_status) == (2, 0, "complete")
    reads = []
    monkeypatch.setattr(jmod, "read_file", lambda *a, **k: reads.append(a))
    assert status._journal(path, cache)[0] is st and reads == []


def test_a_bin_journal_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    path = str(tmp_path / "bin.journal")
    os.mkfifo(path)
    with pytest.raises(UserError, match="not a regular file"):
        status._journal(path, {})


def test_a_bin_journal_that_is_a_directory_or_a_dangling_link_is_refused(tmp_path):
    os.mkdir(tmp_path / "d.journal")
    with pytest.raises(UserError, match="is a directory"):
        status._journal(str(tmp_path / "d.journal"), None)
    os.symlink(tmp_path / "nowhere", tmp_path / "l.journal")
    with pytest.raises(UserError, match="not a regular file"):
        status._journal(str(tmp_path / "l.journal"), None)
    assert status._journal(str(tmp_path / "none.journal"), None) == (None, 0)
