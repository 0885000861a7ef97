"""Grid Engine's parsers and commands, on output recorded from the real Son of Grid
Engine 8.1.9 of the test machine (tests/data/schedulers/sge/)."""

import getpass

from cluster_func.schedulers import SCHEDULERS
from cluster_func.schedulers.base import ERROR, QUEUED, RUNNING
from cluster_func.schedulers.sge import parse_max_array_size
from scheduler_records import recorded

sge = SCHEDULERS["sge"]()


def test_qsub_terse_prints_the_job_id_and_for_an_array_its_range():
    assert sge.parse_job_id(recorded("sge", "qsub_terse.txt").stdout) == "3"
    assert sge.parse_job_id(recorded("sge", "qsub_terse_array.txt").stdout) == "2"


def test_plain_qsub_output_gives_the_id_too():
    assert sge.parse_job_id('Your job 7 ("x") has been submitted\n') == "7"
    assert sge.parse_job_id('Your job-array 8.1-4:1 ("x") has been submitted\n') == "8"
    assert sge.parse_job_id("Unable to run job: denied\n") is None


def test_the_query_is_one_qstat_of_this_users_jobs_with_array_tasks_one_per_line():
    assert sge.query_argv(["3"]) == ["qstat", "-g", "d", "-u", getpass.getuser()]


def test_qstat_says_which_jobs_and_array_tasks_wait_or_run():
    text = recorded("sge", "qstat_g_d_queued.txt").stdout
    ids = ["2.1", "2.4", "3", "4.1", "4.4", "5", "8", "9", "4.5"]
    assert sge.parse_query(text, ids) == {"2.1": RUNNING, "2.4": RUNNING, "3": QUEUED, "4.1": QUEUED,
                                          "4.4": QUEUED, "5": QUEUED, "8": QUEUED}


def test_an_array_id_is_known_while_any_of_its_tasks_is():
    text = recorded("sge", "qstat_g_d_running.txt").stdout
    assert sge.parse_query(text, ["4", "4.2", "6", "3"]) == {"4": RUNNING, "4.2": RUNNING, "6": QUEUED}


def test_a_job_held_in_an_error_state_is_reported_as_an_error():
    text = recorded("sge", "qstat_g_d_error.txt").stdout
    assert sge.parse_query(text, ["9", "10"]) == {"9": ERROR, "10": RUNNING}


def test_an_empty_qstat_means_every_job_has_left_the_queue():
    assert sge.parse_query(recorded("sge", "qstat_g_d_empty.txt").stdout, ["3", "4.1"]) == {}


def test_max_array_size_is_max_aj_tasks_from_qconf():
    assert parse_max_array_size(recorded("sge", "qconf_sconf.txt").stdout) == 75000
    assert parse_max_array_size("max_aj_tasks                 0\n") is None


def test_array_task_ids_are_the_job_id_and_the_task_number():
    assert sge.task_id("4", 2) == "4.2"


def test_qdel_of_a_finished_job_is_not_an_error():
    r = recorded("sge", "qdel_finished.txt")
    assert r.status == 1
    assert sge.cancel_finished(r.stdout + r.stderr)


def test_qdel_that_deleted_some_jobs_and_found_others_finished_is_not_an_error():
    deleted = recorded("sge", "qdel_queued.txt").stdout
    finished = recorded("sge", "qdel_finished.txt").stdout
    assert sge.cancel_finished(deleted + finished)


def test_other_qdel_complaints_are_errors():
    assert not sge.cancel_finished(recorded("sge", "qdel_running.txt").stdout)  # nothing finished there
    assert not sge.cancel_finished('denied: job "3" belongs to user "other"')
    assert not sge.cancel_finished("error: commlib error: got select error (Connection refused)")
