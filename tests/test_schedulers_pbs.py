"""PBS Professional/OpenPBS (and Torque) parsers and commands, on output recorded from
the real OpenPBS 23.06.06 of the test machine (tests/data/schedulers/pbs/), and the PBS
fixes end to end through ``cluf`` with stand-in commands: a one-bin array, paths with
spaces, cancelling a job that is finishing, ids with the server suffix and subjob ids,
and arrays split at ``max_array_size``."""

import json
import re
import sys
from pathlib import Path

import pytest

import cluf_support as cs
from cluster_func.schedulers import SCHEDULERS
from cluster_func.schedulers.base import QUEUED, RUNNING, JobSpec
from cluster_func.schedulers.pbs import (array_parent, is_torque_version, parse_max_array_size,
                                         parse_qstat_columns, parse_qstat_json, short_id)
from scheduler_records import DATA, failure, recorded


def pbs(flavour="pro"):
    s = SCHEDULERS["pbs"]()
    s._torque = flavour == "torque"
    return s


def json_text(name):
    return recorded("pbs", name).stdout


# ------------------------------------------------------------------ submission and ids


def test_qsub_prints_the_job_id_with_the_server_name():
    assert pbs().parse_job_id(recorded("pbs", "qsub.txt").stdout) == "11.vm-pbs"


def test_qsub_of_an_array_prints_its_id_with_empty_brackets():
    assert pbs().parse_job_id(recorded("pbs", "qsub_array.txt").stdout) == "12[].vm-pbs"
    assert pbs().parse_job_id(recorded("pbs", "qsub_J_0-1_2.txt").stdout) == "55[].vm-pbs"


def test_a_qsub_error_has_no_job_id():
    assert pbs().parse_job_id(recorded("pbs", "qsub_J_0-0_refused.txt").stdout) is None


def test_subjob_ids_are_the_ones_qstat_reports():
    jobs = json.loads(json_text("qstat_t_f_F_json_running.json"))["Jobs"]
    assert [pbs().task_id("12[].vm-pbs", i) for i in range(4)] == [f"12[{i}].vm-pbs" for i in range(4)]
    assert all(pbs().task_id("12[].vm-pbs", i) in jobs for i in range(4))


def test_short_ids_and_array_parents():
    assert short_id("12[3].vm-pbs.example.org") == "12[3]"
    assert array_parent("12[3].vm-pbs") == "12[].vm-pbs"
    assert array_parent("14.vm-pbs") == "14.vm-pbs"


# ------------------------------------------------------------------ the query


def test_the_query_asks_qstat_for_full_json_records_of_the_jobs_their_subjobs_and_finished_ones():
    argv = pbs().query_argv(["12[0].vm-pbs", "12[3].vm-pbs", "14.vm-pbs"])
    assert argv == ["qstat", "-x", "-t", "-f", "-F", "json", "12[].vm-pbs", "14.vm-pbs"]


def test_torque_is_asked_for_the_columns_of_this_users_jobs():
    argv = pbs("torque").query_argv(["12.server"])
    assert argv[:3] == ["qstat", "-t", "-u"]


def test_qstat_json_gives_every_job_and_subjob_with_its_state():
    assert parse_qstat_json(json_text("qstat_t_f_F_json_running.json")) == {
        "12[].vm-pbs": "B", "12[0].vm-pbs": "R", "12[1].vm-pbs": "R", "12[2].vm-pbs": "R", "12[3].vm-pbs": "R",
        "14.vm-pbs": "R", "15.vm-pbs": "R"}


def test_queued_held_and_running_jobs_are_live_and_finished_ones_are_absent():
    text = json_text("qstat_f_F_json_queued.json")
    ids = ["10.vm-pbs", "11.vm-pbs", "12[].vm-pbs", "16.vm-pbs", "99.vm-pbs"]
    assert pbs().parse_query(text, ids) == {"10.vm-pbs": RUNNING, "11.vm-pbs": QUEUED, "12[].vm-pbs": QUEUED,
                                            "16.vm-pbs": QUEUED}


def test_subjobs_of_a_running_array_are_running():
    text = json_text("qstat_t_f_F_json_running.json")
    ids = [f"12[{i}].vm-pbs" for i in range(4)] + ["11.vm-pbs"]
    assert pbs().parse_query(text, ids) == {f"12[{i}].vm-pbs": RUNNING for i in range(4)}


def test_jobs_that_qstat_x_lists_as_finished_are_not_live():
    text = json_text("qstat_xf_F_json_finished.json")
    ids = ["10.vm-pbs", "11.vm-pbs", "12[2].vm-pbs", "16.vm-pbs"]
    assert parse_qstat_json(text)["12[2].vm-pbs"] == "F"
    assert pbs().parse_query(text, ids) == {}


def test_ids_match_when_qstat_spells_the_server_otherwise():
    text = json_text("qstat_t_f_F_json_running.json")
    assert pbs().parse_query(text, ["12[1].vm-pbs.example.org", "14"]) == {
        "12[1].vm-pbs.example.org": RUNNING, "14": RUNNING}


def test_an_unknown_id_among_known_ones_still_answers_for_the_known_ones():
    error = failure("pbs", "qstat_x_t_f_F_json_unknown.txt")
    assert error.status == 153
    assert pbs().query_failure_ok(error)
    assert pbs().parse_query(error.stdout, ["56.vm-pbs", "99999.vm-pbs"]) == {"56.vm-pbs": QUEUED}


def test_a_query_that_failed_for_another_reason_is_an_error():
    error = failure("pbs", "qstat_unknown.txt")  # not JSON: qstat without -F json
    assert not pbs().query_failure_ok(error)
    assert not pbs().query_failure_ok(
        type(error)(["qstat"], 1, "", "qstat: cannot connect to server vm-pbs (errno=15010)\n"))


def test_json_that_does_not_parse_is_read_line_by_line():
    text = json_text("qstat_t_f_F_json_running.json").replace('"Job_Name":"arr",', '"Job_Name":"a"r"r",')
    with pytest.raises(ValueError):
        json.loads(text)
    assert parse_qstat_json(text) == parse_qstat_json(json_text("qstat_t_f_F_json_running.json"))


def test_the_column_output_is_read_for_torque():
    text = recorded("pbs", "qstat_t_u_queued.txt").stdout
    assert parse_qstat_columns(text)["12[2].vm-pbs"] == "Q"
    ids = ["10.vm-pbs", "11.vm-pbs", "12[0].vm-pbs", "16.vm-pbs"]
    assert pbs("torque").parse_query(text, ids) == {"10.vm-pbs": RUNNING, "11.vm-pbs": QUEUED,
                                                    "12[0].vm-pbs": QUEUED, "16.vm-pbs": QUEUED}
    assert pbs("torque").parse_query(recorded("pbs", "qstat_t_u_ending.txt").stdout, ["18.vm-pbs"]) == {
        "18.vm-pbs": RUNNING}
    assert pbs("torque").parse_query(recorded("pbs", "qstat_x_t_u_finished.txt").stdout, ["11.vm-pbs"]) == {}


# ------------------------------------------------------------------ flavour, limits, cancelling


def test_qstat_version_tells_pbs_professional_from_torque():
    assert not is_torque_version(recorded("pbs", "qstat_version.txt").stdout)
    assert is_torque_version("Version: 6.1.2\nCommit: 661e092552de43a785c15d39a3634a541d86898e\n")


def test_max_array_size_is_read_from_the_server():
    assert parse_max_array_size(recorded("pbs", "qstat_Bf.txt").stdout, torque=False) == 10000
    assert parse_max_array_size(recorded("pbs", "qmgr_print_server.txt").stdout, torque=False) == 10000
    assert parse_max_array_size("    max_array_size = 2\n", torque=False) == 2


def test_without_max_array_size_pbs_professional_has_its_default_and_torque_no_limit():
    assert parse_max_array_size("Server: vm-pbs\n", torque=False) == 10000
    assert parse_max_array_size("Server: vm-pbs\n", torque=True) is None
    assert parse_max_array_size("    max_job_array_size = 500\n", torque=True) == 500


@pytest.mark.parametrize("name", ["qdel_ending.txt", "qdel_finished.txt", "qdel_mixed.txt"])
def test_qdel_of_a_job_that_is_finishing_or_finished_is_not_an_error(name):
    assert pbs().cancel_finished(failure("pbs", name).output)


def test_other_qdel_complaints_are_errors():
    assert not pbs().cancel_finished("qdel: Unauthorized Request  12.vm-pbs")
    assert not pbs().cancel_finished("Connection refused\nqdel: cannot connect to server vm-pbs (errno=15010)")
    assert not pbs().cancel_finished("qdel: illegally formed job identifier: x\nqdel: Job has finished 12.vm-pbs")


# ------------------------------------------------------------------ directives


def test_a_one_bin_array_is_not_a_one_element_range_which_pbs_refuses():
    d = pbs().directives(JobSpec(name="x", stdout="/o", stderr="/e", array=1))
    assert "-J 0-0" not in d and "-J 0-1:2" in d  # qsub_J_0-0_refused.txt / qsub_J_0-1_2.txt
    assert "-J 0-4" in pbs().directives(JobSpec(name="x", stdout="/o", stderr="/e", array=5))
    assert "-t 0" in pbs("torque").directives(JobSpec(name="x", stdout="/o", stderr="/e", array=1))


def test_output_paths_with_spaces_are_quoted_as_qsub_reads_them():
    d = pbs().directives(JobSpec(name="x", stdout="/a b/x.stdout", stderr="/a b/x.stderr",
                                 raw={"stdout": "/c d/raw.out"}))
    assert "-o '/c d/raw.out'" in d and "-e '/a b/x.stderr'" in d
    # unquoted, qsub refuses the script:
    assert "directive error" in recorded("pbs", "qsub_space_unquoted_refused.txt").stderr


# ------------------------------------------------------------------ through cluf (stand-in commands)


FAKE = '''\
#!{python}
import json, os, sys
d = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(d, "{name}.log"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
sys.stdout.write({stdout!r})
sys.stderr.write({stderr!r})
sys.exit({status})
'''


def fake(bindir, name, stdout="", stderr="", status=0):
    """A stand-in for ``name`` that logs its argv and answers with this output."""
    path = Path(bindir) / name
    path.write_text(FAKE.format(python=sys.executable, name=name, stdout=stdout, stderr=stderr, status=status))
    path.chmod(0o755)


def fake_log(bindir, name):
    path = Path(bindir) / f"{name}.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def bindir(tmp_path):
    d = tmp_path / "bin"
    for name in ("qsub", "qstat", "qdel"):
        cs.stand_in(d, name, "{id}\n")
    return d


@pytest.fixture
def env(tmp_path, bindir):
    return cs.base_env(tmp_path, bindir, CLUF_PBS_FLAVOUR="pro")


def test_cluf_writes_a_one_bin_array_that_pbs_accepts_and_records_its_subjob(tmp_path, env, bindir):
    cs.stand_in(bindir, "qsub", "{id}[].server\n")
    script = cs.write_target(tmp_path, n=10)
    cs.ok(cs.run_cluf("example.py", "-n", 5, "-b", "0,2/5", "--array", "-p", 1, "-j", "jobs", "--scheduler", "pbs",
                      cwd=tmp_path, env=env))
    jobs = cs.read_manifest(tmp_path / "jobs", nodes=5)["jobs"]
    assert {b: (j["id"], j["array_id"]) for b, j in jobs.items()} == {
        "0": ("1001[0].server", "1001[].server"), "2": ("1002[0].server", "1002[].server")}
    for b, job in jobs.items():
        lines = Path(job["script"]).read_text().splitlines()
        assert "#PBS -J 0-1:2" in lines and not any(re.match(r"#PBS -J (\d+)-\1$", x) for x in lines), lines
        # its one subjob (index 0) runs its bin
        assert cs.run_by_hand(job["script"], env={"PBS_ARRAY_INDEX": "0"}).returncode == 0
    assert cs.calls(script) == sorted(cs.round_robin(10, 5, 0) + cs.round_robin(10, 5, 2))


def test_cluf_splits_an_array_above_the_servers_max_array_size(tmp_path, env, bindir):
    cs.stand_in(bindir, "qsub", "{id}[].server\n", first_id=100)
    (bindir / "qstat.out").write_text("Server: server\n    max_array_size = 2\n")
    script = cs.write_target(tmp_path, n=11)
    r = cs.ok(cs.run_cluf("example.py", "-n", 5, "--array", "-p", 1, "-j", "jobs", "--scheduler", "pbs",
                          cwd=tmp_path, env=env))
    assert "at most 2 tasks per array" in r.stdout and "3 arrays" in r.stdout, r.stdout
    assert ["-Bf"] in [c["argv"] for c in cs.stand_in_log(bindir, "qstat")]
    jobs = cs.read_manifest(tmp_path / "jobs", nodes=5)["jobs"]
    assert {b: j["id"] for b, j in jobs.items()} == {
        "0": "101[0].server", "1": "101[1].server", "2": "102[0].server", "3": "102[1].server", "4": "103[0].server"}
    for b, job in jobs.items():
        text = Path(job["script"]).read_text()
        assert ("#PBS -J 0-1\n" if b != "4" else "#PBS -J 0-1:2\n") in text
        res = cs.run_by_hand(job["script"], env={"PBS_ARRAY_INDEX": job["id"][4]})
        assert res.returncode == 0, res.stderr
    assert cs.calls(script) == list(range(11))


def test_cluf_quotes_job_output_paths_with_spaces(tmp_path, env):
    cs.write_target(tmp_path, n=4)
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-q", "-j", "my jobs", "--scheduler", "pbs", cwd=tmp_path, env=env))
    lines = (tmp_path / "my jobs" / "example-0-2.pbs").read_text().splitlines()
    assert f"#PBS -o '{tmp_path}/my jobs/example-0-2.scheduler.stdout'" in lines
    assert f"#PBS -e '{tmp_path}/my jobs/example-0-2.scheduler.stderr'" in lines
    assert (f"if [ -n \"${{PBS_JOBID:-}}\" ]; then exec >>'{tmp_path}/my jobs/example-0-2.stdout' "
            f"2>>'{tmp_path}/my jobs/example-0-2.stderr'; fi") in lines


@pytest.mark.parametrize("qsub_says", ["12[].vm-pbs", "12[].vm-pbs.example.org"])
def test_status_finds_subjobs_by_their_full_ids_in_qstat_json(tmp_path, env, bindir, qsub_says):
    fake(bindir, "qsub", qsub_says + "\n")
    cs.write_target(tmp_path, n=8)
    cs.ok(cs.run_cluf("example.py", "-n", 4, "--array", "-p", 1, "-j", "jobs", "--scheduler", "pbs",
                      cwd=tmp_path, env=env))
    fake(bindir, "qstat", json_text("qstat_t_f_F_json_running.json"))
    r = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    rows = cs.status_table(r.stdout)
    assert [rows[b]["state"] for b in range(4)] == ["running"] * 4, r.stdout + r.stderr
    assert fake_log(bindir, "qstat")[-1] == ["-x", "-t", "-f", "-F", "json", qsub_says], "one query for all"


def test_status_with_an_id_pbs_has_forgotten_still_reports_the_others(tmp_path, env, bindir):
    cs.stand_in(bindir, "qsub", "{id}.vm-pbs\n", first_id=55)  # 56.vm-pbs, 57.vm-pbs
    cs.write_target(tmp_path, n=4)
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-p", 1, "-j", "jobs", "--scheduler", "pbs", cwd=tmp_path, env=env))
    r = recorded("pbs", "qstat_x_t_f_F_json_unknown.txt")
    fake(bindir, "qstat", r.stdout, r.stderr.replace("99999", "57"), r.status)
    st = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    rows = cs.status_table(st.stdout)
    assert (rows[0]["state"], rows[1]["state"]) == ("queued", "vanished"), st.stdout + st.stderr


@pytest.mark.parametrize("qdel_record", ["qdel_ending.txt", "qdel_finished.txt"])
def test_cancel_of_a_job_that_is_finishing_is_not_an_error(tmp_path, env, bindir, qdel_record):
    cs.stand_in(bindir, "qsub", "{id}.vm-pbs\n", first_id=17)  # 18.vm-pbs
    cs.write_target(tmp_path, n=2)
    cs.ok(cs.run_cluf("example.py", "-n", 1, "-p", 1, "-j", "jobs", "--scheduler", "pbs", cwd=tmp_path, env=env))
    fake(bindir, "qstat", json_text("qstat_f_F_json_running.json").replace("14.vm-pbs", "18.vm-pbs"))
    r = recorded("pbs", qdel_record)
    fake(bindir, "qdel", r.stdout, r.stderr, r.status)
    out = cs.ok(cs.run_cluf("--cancel", "jobs", cwd=tmp_path, env=env))
    assert "18.vm-pbs" in out.stdout and "already finished" in out.stdout, out.stdout
    assert fake_log(bindir, "qdel") == [["18.vm-pbs"]]


def test_cancel_that_pbs_refuses_is_a_clear_error(tmp_path, env, bindir):
    cs.stand_in(bindir, "qsub", "{id}.vm-pbs\n", first_id=17)
    cs.write_target(tmp_path, n=2)
    cs.ok(cs.run_cluf("example.py", "-n", 1, "-p", 1, "-j", "jobs", "--scheduler", "pbs", cwd=tmp_path, env=env))
    fake(bindir, "qstat", json_text("qstat_f_F_json_running.json").replace("14.vm-pbs", "18.vm-pbs"))
    fake(bindir, "qdel", "", "qdel: Unauthorized Request  18.vm-pbs\n", 159)
    r = cs.run_cluf("--cancel", "jobs", cwd=tmp_path, env=env)
    cs.assert_clean_error(r, "qdel 18.vm-pbs", "status 159", "Unauthorized Request")


def test_recorded_data_is_where_the_tests_look():
    assert (DATA / "pbs" / "README.md").exists()
