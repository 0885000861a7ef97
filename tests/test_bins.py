"""Bin specs, position lists and the three binning rules (round-robin, hash, key)."""

import itertools
import json
import os
import subprocess
import sys

import pytest

from cluster_func.core import bins
from cluster_func.core.bins import BinSpec, parse_bin_spec, parse_positions
from cluster_func.core.errors import UserError


# --- parse_positions -------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("0", (0,)),
    ("7", (7,)),
    ("0,3", (0, 3)),
    ("0-2,7", (0, 1, 2, 7)),
    ("7,0-2", (0, 1, 2, 7)),
    ("2-2", (2,)),
    ("1,1,0-1", (0, 1)),
    (" 0 - 2 , 5 ", (0, 1, 2, 5)),
    (3, (3,)),
    ([0, 2, "4-5"], (0, 2, 4, 5)),
    ((1,), (1,)),
])
def test_parse_positions_accepts(text, expected):
    assert parse_positions(text) == expected


@pytest.mark.parametrize("text", ["", ",", "a", "-1", "1-", "-", "0-2,", "1.5", "2-1", "0;1", -1, True, None, 1.0, [],
                                  ["a"], [-1]])
def test_parse_positions_rejects(text):
    with pytest.raises(UserError):
        parse_positions(text)


def test_parse_positions_message_names_what_and_value():
    with pytest.raises(UserError) as e:
        parse_positions("x", "--hash position list")
    assert "--hash position list" in str(e.value) and "'x'" in str(e.value)


# --- parse_bin_spec ---------------------------------------------------------------

@pytest.mark.parametrize("text, chosen, total", [
    ("0/3", (0,), 3),
    ("2/3", (2,), 3),
    ("0,1/3", (0, 1), 3),
    ("0-2,7/8", (0, 1, 2, 7), 8),
    ("0/1", (0,), 1),
    (" 1 / 2 ", (1,), 2),
])
def test_parse_bin_spec_accepts(text, chosen, total):
    spec = parse_bin_spec(text)
    assert spec == BinSpec(chosen, total)
    assert parse_bin_spec(spec) is spec


@pytest.mark.parametrize("text", ["3/3", "0/0", "a/b", "1", "-1/3", "0-/2", "", "/", "0/", "/3", "0/3/4", "0//3",
                                  "0-8/8", "1,3/3", "0/-3", "0/1.5", "0/3x", "0/\u00b3", "\u00b3/4", None, 3])
def test_parse_bin_spec_rejects(text):
    with pytest.raises(UserError) as e:
        parse_bin_spec(text)
    assert "bin" in str(e.value).lower()


def test_bin_spec_error_names_the_bad_bin():
    with pytest.raises(UserError) as e:
        parse_bin_spec("0,5/4")
    assert "5" in str(e.value) and "0 to 3" in str(e.value)


@pytest.mark.parametrize("text, canonical", [("0,1/3", "0-1/3"), ("7,0-2/8", "0-2,7/8"), ("0/1", "0/1")])
def test_bin_spec_str_round_trips(text, canonical):
    spec = parse_bin_spec(text)
    assert str(spec) == canonical
    assert parse_bin_spec(str(spec)) == spec


def test_format_positions_inverts_parse():
    for positions in [(0,), (0, 1, 2, 7), (1, 3, 5), (0, 1, 2, 3), (2, 4, 5, 6, 9)]:
        assert parse_positions(bins.format_positions(positions)) == positions


# --- the rules ------------------------------------------------------------------

def test_round_robin_deals_like_cards():
    dealt = [[p for p, _ in bins.select(range(7), bins.BinSpec((i,), 3)).pairs()] for i in range(3)]
    assert dealt == [[0, 3, 6], [1, 4], [2, 5]]


def _selected(args, spec_text, **kw):
    counts = bins.SelectionCounts()
    work = bins.select(args, parse_bin_spec(spec_text), counts=counts, **kw)
    return [p for p, _ in work.pairs()], counts


@pytest.mark.parametrize("make", [list, iter, lambda r: (x for x in r)], ids=["list", "iterator", "generator"])
@pytest.mark.parametrize("spec", ["0/3", "1/3", "2/3", "0,2/3", "0-2/3", "0-2,7/8", "5/8", "0/1"])
def test_select_round_robin(make, spec):
    data = list(range(50))
    positions, _ = _selected(make(data), spec)
    s = parse_bin_spec(spec)
    assert positions == [i for i in data if i % s.total in s.bins]


def test_select_round_robin_bins_partition_the_work():
    data = [f"e{i}" for i in range(101)]
    seen = []
    for b in range(4):
        work = bins.select(iter(data), parse_bin_spec(f"{b}/4"))
        seen += [e for _, e in work.pairs()]
    assert sorted(seen) == sorted(data) and len(seen) == len(data)


def test_work_take_returns_positions_and_elements():
    work = bins.select(iter("abcdefgh"), parse_bin_spec("1/3"))
    positions, elements = work.take(2)[:2]
    assert list(positions) == [1, 4] and elements == ["b", "e"]
    positions, elements = work.take(5)[:2]
    assert list(positions) == [7] and elements == ["h"]
    positions, elements = work.take(5)[:2]
    assert list(positions) == [] and elements == []


def test_work_take_hands_back_what_a_failing_iterator_gave_before_it_raised():
    def gen():
        yield from range(5)
        raise ValueError("broke")

    for spec in ("0/1", "0,1/3"):
        work = bins.select(gen(), parse_bin_spec(spec))
        positions, elements, error = work.take(100)
        assert isinstance(error, ValueError)
        s = parse_bin_spec(spec)
        assert list(positions) == [i for i in range(5) if i % s.total in s.bins]
        assert work.take(100)[1] == []


def test_select_does_not_consume_more_than_asked():
    """Streaming: taking a batch pulls only that batch from a generator."""
    pulled = []

    def gen():
        for i in itertools.count():
            pulled.append(i)
            yield i

    work = bins.select(gen(), parse_bin_spec("0/1"))
    work.take(10)
    assert len(pulled) <= 11
    work = bins.select(gen(), parse_bin_spec("0,1/3"))
    pulled.clear()
    work.take(10)
    assert len(pulled) <= 16


def test_hash_key_separates_joined_strings():
    assert bins.hash_key(["1", "23"]) != bins.hash_key(["12", "3"])
    assert bins.hash_key(["a", ""]) != bins.hash_key(["", "a"])
    assert bins.hash_key([1, 23]) == bins.hash_key(["1", "23"])  # str() of the arguments


def test_hash_bin_uses_str_of_selected_positions_only():
    a = (1, "x", 3.5)
    b = (1, "y", 3.5)
    assert bins.hash_bin(a, (0, 2), 97) == bins.hash_bin(b, (0, 2), 97)
    assert all(0 <= bins.hash_bin((i,), (0,), 5) < 5 for i in range(200))
    with pytest.raises(IndexError):
        bins.hash_bin((1,), (0, 1), 3)


def test_hash_bins_spread_the_work():
    counts = [0] * 4
    for i in range(4000):
        counts[bins.hash_bin((f"file-{i}.txt",), (0,), 4)] += 1
    assert min(counts) > 800, counts


_HASH_PROGRAM = r"""
import json, sys
from cluster_func.core import bins
keys = [("file-%d" % i, i, i * 0.5) for i in range(300)] + [("1", "23"), ("12", "3"), ("\u00e9t\u00e9", None)]
print(json.dumps([bins.hash_bin(k, (0, 1), 7) for k in keys] + [bins.hash_key(["x", 1]).hex()]))
"""


def test_hash_bins_are_stable_across_processes_and_hash_seeds():
    results = []
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        r = subprocess.run([sys.executable, "-c", _HASH_PROGRAM], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        results.append(json.loads(r.stdout))
    assert results[0] == results[1]
    # ... and the same as here (a third seed, whatever this process has), and not all in one bin.
    keys = [("file-%d" % i, i, i * 0.5) for i in range(300)]
    assert [bins.hash_bin(k, (0, 1), 7) for k in keys] == results[0][:300]
    assert len(set(results[0][:300])) == 7


def test_hash_digest_is_pinned():
    """The same bin on every machine and every version: pin one digest (BLAKE2b-64, length-prefixed)."""
    import hashlib

    h = hashlib.blake2b(digest_size=8)
    for s in (b"x", b"1"):
        h.update(len(s).to_bytes(8, "little"))
        h.update(s)
    assert bins.hash_key(["x", 1]) == h.digest()


@pytest.mark.parametrize("args, position, total, expected", [
    ((0,), 0, 3, 0),
    (("a", 2), 1, 3, 2),
    (("a", 3), 1, 3, None),
    (("a", -1), 1, 3, None),
    (("a", "1"), 1, 3, None),
    (("a", 1.0), 1, 3, None),
    (("a", None), 1, 3, None),
])
def test_key_bin(args, position, total, expected):
    assert bins.key_bin(args, position, total) == expected


def test_key_bin_accepts_integer_like_objects():
    class Idx:
        def __index__(self):
            return 2

    assert bins.key_bin((Idx(),), 0, 3) == 2


def test_key_bin_missing_position_raises_index_error():
    with pytest.raises(IndexError):
        bins.key_bin(("a",), 1, 3)


def test_select_by_key_counts_bad_keys_in_every_bin():
    data = [("a", 0), ("b", 1), ("c", 5), ("d", "x"), ("e", 2), ("f", -1)]
    got = {}
    for b in range(3):
        positions, counts = _selected(iter(data), f"{b}/3", key_position=1)
        got[b] = positions
        assert counts.bad_keys == 3
        assert counts.first_bad_key == (2, 5)
    assert got == {0: [0], 1: [1], 2: [4]}


def test_select_by_hash_partitions_and_matches_hash_bin():
    data = [(f"k{i}", i) for i in range(60)]
    union = []
    for b in range(3):
        positions, counts = _selected(iter(data), f"{b}/3", hash_positions=(0,))
        assert all(bins.hash_bin(data[p], (0,), 3) == b for p in positions)
        union += positions
        assert counts.bad_keys == 0 and counts.bad_elements == []
    assert sorted(union) == list(range(60))


def test_select_by_hash_is_independent_of_order():
    data = [(f"k{i}",) for i in range(40)]
    fwd, _ = _selected(iter(data), "1/3", hash_positions=(0,))
    rev, _ = _selected(iter(data[::-1]), "1/3", hash_positions=(0,))
    assert sorted(data[p] for p in fwd) == sorted(data[::-1][p] for p in rev)


def test_select_non_tuple_element_is_one_argument():
    data = ["abc", ("abc",), ["abc", 1]]
    positions, _ = _selected(iter(data), "0/1", hash_positions=(0,))
    # "abc" and ("abc",) hash alike; the list is one argument whose str() differs.
    assert bins.hash_bin(("abc",), (0,), 5) == bins.hash_bin(("abc",), (0,), 5)
    assert positions == [0, 1, 2]


@pytest.mark.parametrize("mode", ["hash", "key"])
def test_select_short_element_is_reported_by_exactly_one_bin(mode):
    data = [("a", 0), ("short",), ("c", 1)]
    kw = {"hash_positions": (0, 1)} if mode == "hash" else {"key_position": 1}
    reported = []
    for b in range(3):
        _, counts = _selected(iter(data), f"{b}/3", **kw)
        reported += [(b, pos) for pos, _, _ in counts.bad_elements]
        for _, _, msg in counts.bad_elements:
            assert "position 1" in msg
    assert reported == [(1, 1)]  # the bin round-robin would give position 1


def test_expected_count():
    spec = parse_bin_spec("0,2/3")
    assert bins.expected_count(list(range(10)), spec, "round-robin") == 4 + 3
    assert bins.expected_count(list(range(2)), spec, "round-robin") == 1
    assert bins.expected_count(iter(range(10)), spec, "round-robin") is None
    assert bins.expected_count(list(range(10)), spec, "hash") is None
    for n in range(0, 20):
        for text in ["0/1", "1/3", "0-2,7/8", "3,5/6"]:
            s = parse_bin_spec(text)
            assert bins.expected_count(range(n), s, "round-robin") == sum(1 for i in range(n) if i % s.total in s.bins)
