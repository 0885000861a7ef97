"""Each family of the new user's sweep (benchmarks/bad_input_sweep.py: options from the option table,
odd scripts, torn journals, manifests and defaults files, GPU variables) ends, for a sample of its
inputs, in one clear message or a run, never in an internal error (issue 29)."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bad_input_sweep.py"
_spec = importlib.util.spec_from_file_location("bad_input_sweep", _PATH)
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


def _family(item):
    return item[0].split(" --")[0] + " options" if " --" in item[0] else item[0]


def _sample(per_family=4):
    by_family = {}
    for item in sweep.inputs():
        by_family.setdefault(_family(item), []).append(item)
    out = []
    for family, items in sorted(by_family.items()):
        step = max(1, len(items) // per_family)
        out += [pytest.param(i, id=f"{family}: {i[1][:60]}") for i in items[::step][:per_family]]
    return out


@pytest.mark.parametrize("item", _sample())
def test_each_family_of_bad_input_ends_in_a_clear_message_or_a_run_never_an_internal_error(item):
    family, name, outcome, err = sweep.run_one(item)
    assert outcome in ("clear", "accepted"), (name, outcome, err)
