"""Slurm's parsers and commands, on output recorded from the real Slurm 22.05 of the
test machine (tests/data/schedulers/slurm/)."""

import getpass

import pytest

from cluster_func.schedulers import SCHEDULERS
from cluster_func.schedulers.base import ERROR, QUEUED, RUNNING, JobSpec
from cluster_func.schedulers.slurm import parse_max_array_size
from scheduler_records import recorded

slurm = SCHEDULERS["slurm"]()


def test_sbatch_parsable_prints_only_the_job_id():
    assert slurm.parse_job_id(recorded("slurm", "sbatch_parsable.txt").stdout) == "3"
    assert slurm.parse_job_id(recorded("slurm", "sbatch_parsable_array.txt").stdout) == "4"


def test_plain_sbatch_and_a_cluster_suffix_give_the_id_too():
    assert slurm.parse_job_id("Submitted batch job 123\n") == "123"
    assert slurm.parse_job_id("123;cluster2\n") == "123"
    assert slurm.parse_job_id("sbatch: error: Batch job submission failed\n") is None


def test_submission_is_sbatch_parsable_with_the_script():
    assert slurm.submit_argv("/jobs/a b.slurm") == ["sbatch", "--parsable", "/jobs/a b.slurm"]
    assert slurm.submit_input("/jobs/a b.slurm") is None


def test_the_query_is_one_squeue_of_this_users_jobs_with_array_tasks_one_per_line():
    argv = slurm.query_argv(["3", "4_0"])
    assert argv[0] == "squeue" and "-r" in argv and argv[argv.index("-u") + 1] == getpass.getuser()
    assert argv[argv.index("-o") + 1] == "%i %T %r"


def test_a_pending_job_is_queued_whatever_its_reason_but_one_slurm_cannot_launch_is_held_for_good():
    text = recorded("slurm", "squeue_reasons.txt").stdout  # Resources, Priority, JobHeldUser, running
    assert slurm.parse_query(text, ["152", "153", "154", "155_0", "155_1"]) == {
        "152": RUNNING, "153": QUEUED, "154": QUEUED, "155_0": QUEUED, "155_1": QUEUED}
    # Not recorded here (this Slurm launched every job): the reason as public reports of it show it
    # in squeue's reason column (scontrol says Reason=launch_failed_requeued_held)
    held = text + "156 PENDING launch failed requeued held\n"
    assert slurm.parse_query(held, ["156", "153"]) == {"156": ERROR, "153": QUEUED}


def test_squeue_says_which_jobs_and_array_tasks_are_pending_or_running():
    text = recorded("slurm", "squeue_queued.txt").stdout
    ids = ["2", "3", "4_0", "4_3", "5", "6", "99", "4_9"]
    assert slurm.parse_query(text, ids) == {"2": RUNNING, "3": QUEUED, "4_0": QUEUED, "4_3": QUEUED,
                                            "5": QUEUED, "6": QUEUED}


def test_running_array_tasks_are_running_and_finished_jobs_are_absent():
    text = recorded("slurm", "squeue_running.txt").stdout
    assert slurm.parse_query(text, ["3", "4_1", "4_2", "5", "6"]) == {"4_1": RUNNING, "4_2": RUNNING, "6": RUNNING}


def test_an_empty_squeue_means_every_job_has_left_the_queue():
    assert slurm.parse_query(recorded("slurm", "squeue_empty.txt").stdout, ["2", "3", "4_0"]) == {}


def test_max_array_size_is_read_from_scontrol_show_config():
    assert parse_max_array_size(recorded("slurm", "scontrol_show_config.txt").stdout) == 1001
    assert parse_max_array_size("") is None


def test_array_task_ids_are_the_array_id_and_the_index():
    assert slurm.task_id("4", 2) == "4_2"


def test_scancel_of_a_finished_job_is_silent_and_its_older_complaints_are_not_errors():
    assert recorded("slurm", "scancel_finished.txt") == ("", "", 0)
    assert slurm.cancel_argv(["4", "5"]) == ["scancel", "4", "5"]
    # Slurm releases before 22.05 complained (not recorded here: the wording of their man page).
    assert slurm.cancel_finished("scancel: error: Kill job error on job id 3: Job/step already completing or completed")
    assert slurm.cancel_finished("scancel: error: Kill job error on job id 3: Invalid job id specified")


def test_other_scancel_complaints_are_errors():
    assert not slurm.cancel_finished("scancel: error: Kill job error on job id 3: Access/permission denied")
    assert not slurm.cancel_finished("")


@pytest.mark.parametrize("path", ["/jobs/a b/x.stdout", "/jobs/it's/x.stdout"])
def test_output_paths_are_quoted_in_the_directives(path):
    d = slurm.directives(JobSpec(name="x", stdout=path, stderr=path))
    assert d[1] == "--output=" + {"/jobs/a b/x.stdout": "'/jobs/a b/x.stdout'",
                                  "/jobs/it's/x.stdout": "'/jobs/it'\"'\"'s/x.stdout'"}[path]
