"""The scheduler plug-in interface: the one command runner, the registry, and what
comes from it (--scheduler choices, the *_options keys, auto-detection, warnings)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cluf_support as cs
from cluster_func import options
from cluster_func import schedulers
from cluster_func.core.errors import SchedulerError, UserError
from cluster_func.schedulers.base import (REGISTRY, CommandFailed, CommandNotFound, CommandTimedOut, Scheduler,
                                          register, run)

PACKAGE = Path(schedulers.__file__).parent
schedulers.SCHEDULERS  # (the registry fills as its modules are imported: on first use)


# ------------------------------------------------------------------ the runner


def test_run_returns_what_the_command_printed():
    assert run([sys.executable, "-c", "print('12.server')"]) == "12.server\n"


def test_run_gives_the_command_its_input_on_stdin_and_runs_it_in_cwd(tmp_path):
    code = "import os, sys; print(os.getcwd(), sys.stdin.read().upper())"
    assert run([sys.executable, "-c", code], cwd=str(tmp_path), input="#bsub -J x\n") == f"{tmp_path} #BSUB -J X\n\n"
    assert run([sys.executable, "-c", "import sys; print(repr(sys.stdin.read()))"]) == "''\n"


def test_a_failing_command_says_the_command_its_status_and_the_schedulers_words():
    code = "import sys; sys.stderr.write('qdel: Unauthorized Request\\nsecond line\\n'); sys.exit(159)"
    with pytest.raises(CommandFailed) as e:
        run([sys.executable, "-c", code])
    msg = str(e.value)
    assert "exited with status 159 and said: qdel: Unauthorized Request second line" in msg and "\n" not in msg
    assert e.value.status == 159 and e.value.stderr.startswith("qdel:")
    assert isinstance(e.value, SchedulerError) and isinstance(e.value, UserError)


def test_a_missing_command_is_not_on_path_not_a_raw_errno():
    with pytest.raises(CommandNotFound) as e:
        run(["cluf-no-such-qstat", "-f"])
    assert str(e.value).startswith("cluf-no-such-qstat is not on PATH") and "Errno" not in str(e.value)


def test_a_command_that_does_not_answer_in_time_says_so():
    with pytest.raises(CommandTimedOut) as e:
        run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)
    assert "did not answer within 0.2 s" in str(e.value)


def test_no_module_but_the_command_runner_runs_a_command_itself():
    for path in PACKAGE.parent.rglob("*.py"):
        if path.name != "commands.py":
            assert not re.search(r"import subprocess|subprocess\.", path.read_text()), \
                f"{path} runs a command itself: use core.commands.run()"


def test_the_cluster_side_never_imports_the_local_side_and_nothing_imports_up():
    import re
    root = PACKAGE.parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        folder = path.parent.name
        if folder in ("cluster", "schedulers", "record", "core"):
            assert not re.search(r"from \.+local\b|import local\b", text), f"{path} imports the local side"
        if folder in ("local", "cluster", "schedulers", "record", "core"):
            assert not re.search(r"from \.+(cli|api)\b", text), f"{path} imports up"
        if folder in ("schedulers", "record", "core"):
            assert not re.search(r"from \.+cluster\b", text), f"{path} imports the cluster side"
        if folder == "core":
            assert not re.search(r"from \.\.(schedulers|record)\b", text), f"{path} imports up"


def test_plain_clum_loads_no_scheduler_module(tmp_path):
    script = tmp_path / "tiny.py"
    script.write_text("def target(x):\n    return x\nargs = range(3)\n")
    code = ("import sys\nfrom cluster_func.cli import clum_main\n"
            f"sys.argv = ['clum', {str(script)!r}, '-p', '1', '--quiet']\n"
            "try:\n    clum_main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('cluster_func.schedulers.')))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout


# ------------------------------------------------------------------ the registry


def test_every_module_of_the_package_registers_its_scheduler():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "base", "job"}
    assert {cls.__module__.rsplit(".", 1)[1] for cls in REGISTRY.values()} == modules
    assert schedulers.names() == sorted(REGISTRY)
    assert {"pbs", "slurm", "sge"} <= set(REGISTRY)


def test_every_scheduler_fills_in_the_whole_interface():
    for cls in REGISTRY.values():
        sched = cls()  # no abstract member left
        assert cls.name and cls.title and cls.extension.startswith(".") and cls.prefix.startswith("#")
        assert cls.submit_command and cls.options_help and cls.detect_hint
        assert isinstance(sched.lines(schedulers.JobSpec(name="x", stdout="/o", stderr="/e")), list)


def test_a_scheduler_with_a_missing_member_cannot_be_made():
    class Half(Scheduler):
        name = "half"

        def directives(self, job):
            return []

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_a_registered_class_is_a_choice_at_once():
    @register
    class Toy(REGISTRY["slurm"]):
        name = "toy"

    try:
        assert "toy" in schedulers.names()
        assert isinstance(schedulers.get("toy", submitting=False), Toy)
        assert ["--toy-options are ignored: the jobs are for slurm."] == schedulers.ignored_options(
            REGISTRY["slurm"](), {"toy_options": {"a": "1"}, "slurm_options": {"b": "2"}})
    finally:
        del REGISTRY["toy"]


def test_two_schedulers_may_not_share_a_name():
    class Other(REGISTRY["slurm"]):
        pass

    with pytest.raises(ValueError, match="two schedulers"):
        register(Other)


def test_the_scheduler_option_and_the_raw_options_come_from_the_registry():
    keys = set(options.valid_keys("cluf"))
    for name in schedulers.names():
        assert f"{name}-options" in keys
        assert options.from_dict({f"{name}_options": "a=1,b"}, "cluf", "x") == {f"{name}-options": {"a": "1", "b": None}}
        assert options.from_dict({"scheduler": name}, "cluf", "x") == {"scheduler": name}
    with pytest.raises(UserError, match="scheduler"):
        options.from_dict({"scheduler": "moab"}, "cluf", "x")


def test_unknown_scheduler_names_list_the_registered_ones():
    with pytest.raises(UserError) as e:
        schedulers.get("moab", submitting=False)
    assert all(n in str(e.value) for n in schedulers.names())


def test_detection_asks_slurm_then_grid_engine_then_pbs_and_falls_back_to_pbs():
    order = [c.name for c in schedulers.in_detection_order()]
    assert order.index("slurm") < order.index("sge") < order.index("pbs")
    assert [c.name for c in REGISTRY.values() if c.detect_fallback] == ["pbs"]
    assert schedulers.detection_text().startswith("sbatch on PATH means slurm; qsub with SGE_ROOT set means sge")


@pytest.mark.parametrize("commands, sge_root, expected", [
    (("sbatch", "qsub"), True, "slurm"),
    (("qsub",), True, "sge"),
    (("qsub",), False, "pbs"),
    ((), False, "pbs"),
])
def test_auto_detection_keeps_its_results(tmp_path, monkeypatch, commands, sge_root, expected):
    for name in commands:
        cs.stand_in(tmp_path, name)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CLUF_PBS_FLAVOUR", "pro")
    if sge_root:
        monkeypatch.setenv("SGE_ROOT", "/nonexistent")
    else:
        monkeypatch.delenv("SGE_ROOT", raising=False)
    assert schedulers.detect(submitting=False).name == expected


def test_auto_detection_with_pbs_qsub_picks_pbs_professional_by_qstat_version(tmp_path, monkeypatch):
    cs.stand_in(tmp_path, "qsub")
    cs.stand_in(tmp_path, "qstat")
    (tmp_path / "qstat.out").write_text("pbs_version = 23.06.06\n")  # tests/data/schedulers/pbs/qstat_version.txt
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SGE_ROOT", raising=False)
    monkeypatch.delenv("CLUF_PBS_FLAVOUR", raising=False)
    sched = schedulers.detect(submitting=True)
    assert (sched.name, sched.torque) == ("pbs", False)
    assert cs.stand_in_log(tmp_path, "qstat")[0]["argv"] == ["--version"]
    (tmp_path / "qstat.out").write_text("Version: 6.1.2\n")
    assert schedulers.detect(submitting=True).torque


def test_auto_detection_with_nothing_to_submit_to_is_an_error_naming_the_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError) as e:
        schedulers.detect(submitting=True)
    assert "sbatch" in str(e.value) and "qsub" in str(e.value) and "-q/--no-q" in str(e.value)


# ------------------------------------------------------------------ through cluf


def test_a_query_command_missing_from_path_is_a_clear_error(tmp_path):
    bindir = tmp_path / "bin"
    cs.stand_in(bindir, "sbatch", "{id}\n")
    cs.write_target(tmp_path, n=4)
    env = cs.base_env(tmp_path, None, PATH=f"{bindir}{os.pathsep}{os.path.dirname(sys.executable)}")
    cs.ok(cs.run_cluf("example.py", "-n", 2, "-j", "jobs", "--scheduler", "slurm", cwd=tmp_path, env=env))
    r = cs.run_cluf("--status", "jobs", cwd=tmp_path, env=env)
    err = cs.assert_clean_error(r, "squeue is not on PATH", "slurm")
    assert "Errno" not in err and len(err.strip().splitlines()) == 1, err


def test_raw_options_for_another_scheduler_are_ignored_with_a_warning(tmp_path):
    cs.write_target(tmp_path, n=4)
    env = cs.base_env(tmp_path)
    r = cs.ok(cs.run_cluf("example.py", "-n", 2, "-q", "-j", "jobs", "--scheduler", "sge",
                          "--slurm-options", "qos=long", "-o", "vmem=1gb", cwd=tmp_path, env=env))
    assert re.search(r"--pbs-options are ignored: the jobs are for sge", r.stderr), r.stderr
    assert re.search(r"--slurm-options are ignored: the jobs are for sge", r.stderr), r.stderr
