"""Option parsing, clum_options validation and merging (the clum side)."""

import pytest

from cluster_func import options
from cluster_func.core.bins import BinSpec
from cluster_func.core.errors import UserError


def test_canonical_accepts_dashes_underscores_and_leading_dashes():
    assert options.canonical("jobs_dir") == "jobs-dir"
    assert options.canonical("jobs-dir") == "jobs-dir"
    assert options.canonical("--processes") == "processes"
    assert options.attr("jobs-dir") == "jobs_dir"


def test_clum_keys():
    keys = set(options.valid_keys("clum"))
    assert {"target", "args", "processes", "bins", "hash", "key", "quiet", "journal", "resume", "retries",
            "timeout"} <= keys
    assert "nodes" not in keys


def test_from_dict_parses_every_clum_option():
    got = options.from_dict({"target": "run_one", "args": "settings", "processes": 3, "bins": "0,1/3",
                             "hash": [0, 2], "retries": 2, "timeout": 1.5, "quiet": True, "resume": False},
                            "clum", "clum_options")
    assert got == {"target": "run_one", "args": "settings", "processes": 3, "bins": BinSpec((0, 1), 3),
                   "hash": (0, 2), "retries": 2, "timeout": 1.5, "quiet": True, "resume": False}


def test_from_dict_key_and_hash_forms():
    assert options.from_dict({"key": 2}, "clum", "x") == {"key": 2}
    assert options.from_dict({"key": "2"}, "clum", "x") == {"key": 2}
    assert options.from_dict({"hash": "0-2,7"}, "clum", "x") == {"hash": (0, 1, 2, 7)}
    assert options.from_dict({"hash": 1}, "clum", "x") == {"hash": (1,)}


def test_unknown_key_names_the_key_and_lists_the_valid_ones():
    with pytest.raises(UserError) as e:
        options.from_dict({"proceses": 2}, "clum", "clum_options")
    msg = str(e.value)
    assert "'proceses'" in msg and "clum_options" in msg
    for k in options.valid_keys("clum"):
        assert k in msg


def test_non_string_key_is_an_error():
    with pytest.raises(UserError):
        options.from_dict({1: 2}, "clum", "clum_options")


@pytest.mark.parametrize("key, value", [
    ("processes", 0), ("processes", -1), ("processes", "many"), ("processes", 1.5), ("processes", True),
    ("bins", "3/3"), ("bins", "0/0"), ("bins", "a/b"), ("bins", "1"), ("bins", "-1/3"), ("bins", "0-/2"),
    ("hash", "-1"), ("hash", "a b"), ("hash", "2x"), ("hash", -1), ("hash", [0, -1]), ("hash", True),
    ("key", "0,1"), ("key", -1), ("key", "x-y"), ("key", "x,y"), ("key", 1.5), ("key", False),
    ("retries", -1), ("timeout", 0), ("timeout", -2), ("timeout", "soon"),
    ("target", ""), ("target", "not a name"), ("target", 3), ("args", "a-b"),
    ("quiet", "maybe"),
])
def test_bad_values_are_user_errors_naming_the_option(key, value):
    with pytest.raises(UserError) as e:
        options.from_dict({key: value}, "clum", "clum_options")
    assert key in str(e.value)


def test_processes_accepts_integral_values():
    assert options.from_dict({"processes": "4"}, "clum", "x") == {"processes": 4}
    assert options.from_dict({"processes": 4.0}, "clum", "x") == {"processes": 4}


def test_merge_precedence_and_defaults():
    merged = options.merge("clum", {"processes": 2, "target": "a"}, {"target": "b", "bins": None})
    assert merged["processes"] == 2
    assert merged["target"] == "b"  # a later layer (the command line) wins
    assert merged["args"] == "args" and merged["retries"] == 0
    assert merged["bins"] is None and merged["hash"] is None and merged["key"] is None
    assert merged["timeout"] is None and merged["quiet"] is False and merged["resume"] is False


def test_merge_returns_attribute_names():
    merged = options.merge("clum")
    assert all("-" not in k for k in merged)
    assert merged["target"] == "target" and merged["args"] == "args" and merged["processes"] is None


@pytest.mark.parametrize("key", ["jobs-dir", "jobs_dir"])
def test_clum_options_accepts_jobs_dir(key, tmp_path):
    # clum reads clum_options with cluf's keys allowed (a dict shared by both commands)
    options.from_dict({key: str(tmp_path)}, "clum", "clum_options", ignore_foreign=True)


def test_a_new_option_is_one_entry_in_the_table_for_both_parsers_the_dicts_and_the_job_scripts(monkeypatch):
    from cluster_func import cli

    entry = options.Option("test-depth", options._int(1), None, metavar="D", group="calls",
                           forward=lambda value, opts: [str(value)],
                           help="a test option (default: none). Example: --test-depth 3")
    monkeypatch.setattr(options, "OPTIONS", [*options.OPTIONS, entry])
    monkeypatch.setattr(options, "BY_NAME", {**options.BY_NAME, entry.name: entry})
    for parser in (cli.clum_parser(), cli.cluf_parser()):
        assert "--test-depth D" in parser.format_help()
        assert parser.parse_args(["s.py", "--test-depth", "3"]).test_depth == "3"
    assert options.from_dict({"test_depth": 4}, "cluf", "cluf_options") == {"test-depth": 4}
    assert options.forwarded({"target": "t", "args": "a", "test_depth": 4})[-2:] == ["--test-depth", "4"]


@pytest.mark.parametrize("argv, words", [
    (["--memory", "99999999999T"], ["1024T", "any scheduler can grant"]),
    (["--cpus", "99999999"], ["at most 10,000", "any one node"]),
    (["--timeout", "1e-9"], ["floor of 0.01 s"]),
    (["--timeout", "1e999"], ["3650 days"]),
])
def test_a_size_count_or_timeout_beyond_what_can_be_granted_is_refused_naming_the_limit(tmp_path, argv, words):
    import subprocess
    import sys

    (tmp_path / "s.py").write_text("def target(x):\n    pass\nargs = [1, 2]\n")
    env = {**__import__("os").environ, "CLUFRC": "/dev/null"}
    r = subprocess.run([sys.executable, "-c", "from cluster_func.cli import cluf_main; cluf_main()", "s.py", "-n",
                        "2", "-q", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def test_results_and_gpus_have_a_meaning_per_command_in_the_table(tmp_path, monkeypatch):
    """--results is clum's file and cluf's format; --gpus is clum's GPUs per worker and cluf's count
    per job: each command's parser, help and metavar come from the option's own entry."""
    from cluster_func import cli

    monkeypatch.chdir(tmp_path)
    results, gpus = options.BY_NAME["results"], options.BY_NAME["gpus"]
    assert results.read("scores.jsonl", "clum") == str(tmp_path / "scores.jsonl")
    assert results.read("jsonl", "cluf") == "jsonl" and results.read(".pkl", "cluf") == "pkl"
    with pytest.raises(UserError, match="takes a file name with clum"):
        results.read("jsonl", "clum")
    with pytest.raises(UserError, match="cluf --results takes a format"):
        results.read("scores.jsonl", "cluf")
    assert results.read("scores.jsonl", "cluf", written_for="clum") == "jsonl"  # clum_options' file: its format
    with pytest.raises(UserError, match="^cluf 'results' in cluf_options takes a format"):
        options.from_dict({"results": "scores.jsonl"}, "cluf", "cluf_options")
    assert gpus.read("all", "clum") == "all" and gpus.read("0,2", "clum") == ("0", "2")
    assert gpus.read("2", "cluf") == 2
    with pytest.raises(UserError, match="cluf --gpus takes the number"):
        gpus.read("0,2", "cluf")
    clum_help, cluf_help = cli.clum_parser().format_help(), cli.cluf_parser().format_help()
    assert "--results PATH" in clum_help and "--results FORMAT" in cluf_help
    assert "--gpus SPEC" in clum_help and "--gpus N" in cluf_help
    # cluf reading clum_options: clum's "all" is refused only if cluf is given no count of its own
    layer = options.from_dict({"gpus": "all"}, "cluf", "clum_options", ignore_foreign=True, written_for="clum")
    with pytest.raises(UserError, match="cluf --gpus takes the number"):
        options.check(options.merge("cluf", layer))
    merged = options.merge("cluf", layer, {"gpus": 2})
    options.check(merged)
    assert options.forwarded(merged)[-2:] == ["--gpus", "2"]


def test_failed_is_a_clum_mode_of_the_table_not_a_key_of_the_dicts():
    from cluster_func import cli

    failed = options.BY_NAME["failed"]
    assert failed.commands == "clum" and failed.flag and not failed.in_dicts
    assert cli.clum_parser().parse_args(["s.py", "--failed"]).failed is True
    assert "failed" not in options.valid_keys("clum") and options.merge("clum")["failed"] is False
    with pytest.raises(UserError, match="unknown option 'failed'"):
        options.from_dict({"failed": True}, "clum", "clum_options", ignore_foreign=True)
