"""clum --gpus / --gpus-per-worker: every worker sees exactly its own GPU(s).

No GPU is needed: the GPUs come from a CUDA_VISIBLE_DEVICES list, or from a stand-in
``nvidia-smi`` on PATH.  Each call records its worker's pid, the GPU variables it saw
and what ``init_worker()`` saw, so the tests read which worker had which GPUs.
"""

import os
import stat

import pytest

GPU_VARS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")

SCRIPT = '''\
import os, time
AT_INIT = None

def init_worker():
    global AT_INIT
    AT_INIT = os.environ.get("CUDA_VISIBLE_DEVICES", "-")

def target(x):
    rec("call", x, os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "-"),
        os.environ.get("ROCR_VISIBLE_DEVICES", "-"), os.environ.get("CUDA_DEVICE_ORDER", "-"), AT_INIT)
    time.sleep(0.02)

args = range(12)
'''

SMI = '''#!/bin/sh
[ "$1" = -L ] || exit 9
echo "GPU 0: NVIDIA Stand-in (UUID: GPU-00000000-aaaa)"
echo "GPU 1: NVIDIA Stand-in (UUID: GPU-11111111-bbbb)"
echo "GPU 2: NVIDIA Stand-in (UUID: GPU-22222222-cccc)"
'''


def env_without_gpus(clum, **extra):
    """clum's test environment with no GPU variable from this machine, and ``extra`` set."""
    env = clum.env()
    for k in GPU_VARS:
        env.pop(k, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(clum, *args, env=None, **extra):
    import subprocess

    return subprocess.run([clum.exe, *map(str, args)], cwd=clum.dir, capture_output=True, text=True,
                          timeout=60, env=env or env_without_gpus(clum, **extra))


def calls(clum):
    """[(x, pid, CUDA_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES, CUDA_DEVICE_ORDER, at init)]."""
    return [(int(x), int(pid), cvd, rocr, order, init)
            for kind, x, pid, cvd, rocr, order, init in clum.evidence() if kind == "call"]


def gpus_by_worker(clum, var=2):
    """{pid: the set of values of the GPU variable its calls saw}."""
    out = {}
    for c in calls(clum):
        out.setdefault(c[1], set()).add(c[var])
    return out


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stderr)
    return r


@pytest.fixture
def smi_bin(tmp_path):
    """A folder holding a stand-in nvidia-smi that lists three GPUs."""
    folder = tmp_path / "bin"
    folder.mkdir()
    path = folder / "nvidia-smi"
    path.write_text(SMI)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return folder


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_each_worker_sees_exactly_its_own_gpu_from_cuda_visible_devices(clum, method):
    clum.script("s.py", SCRIPT)
    ok(run(clum, "s.py", "--gpus", "all", "--start-method", method, "--quiet", CUDA_VISIBLE_DEVICES="3,5,7"))
    seen = gpus_by_worker(clum)
    assert len(seen) == 3, seen  # -p defaults to the number of GPUs
    assert all(len(v) == 1 for v in seen.values()), seen  # one worker, one GPU, always the same
    assert sorted(v for s in seen.values() for v in s) == ["3", "5", "7"]  # each GPU to one worker
    assert all(c[5] == c[2] for c in calls(clum)), calls(clum)  # init_worker() saw it already
    assert sorted(c[0] for c in calls(clum)) == list(range(12))


def test_the_gpus_come_from_nvidia_smi_when_cuda_visible_devices_is_not_set(clum, smi_bin):
    clum.script("s.py", SCRIPT)
    ok(run(clum, "s.py", "--gpus", "all", "--quiet", PATH=f"{smi_bin}{os.pathsep}{os.environ['PATH']}"))
    seen = gpus_by_worker(clum)
    assert sorted(v for s in seen.values() for v in s) == ["0", "1", "2"] and len(seen) == 3, seen
    # nvidia-smi numbers GPUs in PCI bus order: CUDA is told to number them so too
    assert {c[4] for c in calls(clum)} == {"PCI_BUS_ID"}


def test_gpus_per_worker_gives_each_worker_k_gpus_and_halves_the_workers(clum):
    clum.script("s.py", SCRIPT)
    ok(run(clum, "s.py", "--gpus", "all", "--gpus-per-worker", 2, "--quiet", CUDA_VISIBLE_DEVICES="0,1,2,3"))
    seen = gpus_by_worker(clum)
    assert sorted(v for s in seen.values() for v in s) == ["0,1", "2,3"] and len(seen) == 2, seen


def test_gpus_per_worker_alone_means_all_the_gpus(clum):
    clum.script("s.py", SCRIPT)
    ok(run(clum, "s.py", "--gpus-per-worker", 3, "--quiet", CUDA_VISIBLE_DEVICES="4,5,6"))
    assert {c[2] for c in calls(clum)} == {"4,5,6"} and len(gpus_by_worker(clum)) == 1


def test_a_count_takes_the_first_gpus_and_a_list_names_them(clum):
    clum.script("s.py", SCRIPT)
    ok(run(clum, "s.py", "--gpus", 2, "--quiet", CUDA_VISIBLE_DEVICES="4,5,6"))
    assert {c[2] for c in calls(clum)} == {"4", "5"}
    clum.out.unlink()
    ok(run(clum, "s.py", "--gpus", "6,4", "--quiet", CUDA_VISIBLE_DEVICES="4,5,6"))
    assert {c[2] for c in calls(clum)} == {"6", "4"}
    clum.out.unlink()
    ok(run(clum, "s.py", "--gpus", "5,", "--quiet", CUDA_VISIBLE_DEVICES="4,5,6"))  # one id: with a comma
    assert {c[2] for c in calls(clum)} == {"5"}


def test_fewer_workers_than_gpus_with_p_use_the_first_gpus(clum):
    clum.script("s.py", SCRIPT)
    ok(run(clum, "s.py", "--gpus", "all", "-p", 1, "--quiet", CUDA_VISIBLE_DEVICES="4,5,6"))
    assert {c[2] for c in calls(clum)} == {"4"}


def test_gpus_set_in_clum_options_work_as_on_the_command_line(clum):
    clum.script("s.py", SCRIPT + 'clum_options = {"gpus": "all", "gpus_per_worker": 2}\n')
    ok(run(clum, "s.py", "--quiet", CUDA_VISIBLE_DEVICES="0,1,2,3"))
    assert sorted(v for s in gpus_by_worker(clum).values() for v in s) == ["0,1", "2,3"]


def test_amd_gpus_from_rocr_visible_devices_are_shared_out_in_it(clum):
    clum.script("s.py", SCRIPT)
    ok(run(clum, "s.py", "--gpus", "all", "--quiet", ROCR_VISIBLE_DEVICES="0,1"))
    seen = gpus_by_worker(clum, var=3)
    assert sorted(v for s in seen.values() for v in s) == ["0", "1"] and len(seen) == 2, seen
    assert {c[2] for c in calls(clum)} == {"-"}  # CUDA's variable is left alone


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_worker_that_replaces_a_dead_one_has_the_same_gpu(clum, method):
    # Call 5 kills its worker the first time it runs; --retries 1 runs it again.
    clum.script("s.py", SCRIPT.replace("    time.sleep(0.02)\n", '''\
    time.sleep(0.02)
    marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "died")
    if x == 5 and not os.path.exists(marker):
        open(marker, "w").close()
        rec("died", x, os.getpid(), os.environ["CUDA_VISIBLE_DEVICES"], "-", "-", "-")
        os._exit(3)
'''))
    r = ok(run(clum, "s.py", "--gpus", "all", "--retries", 1, "--start-method", method, "--quiet",
               CUDA_VISIBLE_DEVICES="0,1"))
    [died] = [(int(pid), gpu) for kind, x, pid, gpu, *_ in clum.evidence() if kind == "died"]
    seen = gpus_by_worker(clum)
    assert all(len(v) == 1 for v in seen.values()), seen
    with_its_gpu = [pid for pid, v in seen.items() if v == {died[1]}]
    assert len(with_its_gpu) == 2 and died[0] in with_its_gpu, (died, seen, r.stderr)  # it, then its replacement
    assert len([pid for pid, v in seen.items() if v != {died[1]}]) == 1
    assert sorted(c[0] for c in calls(clum)) == sorted([*range(12), 5])


# ------------------------------------------------------------------ no GPU, bad specs


def test_no_gpu_anywhere_is_exit_2_saying_where_it_looked(clum, clean_error):
    clum.script("s.py", SCRIPT)
    r = run(clum, "s.py", "--gpus", "all", PATH="/usr/bin:/bin")
    clean_error(r, "found no GPU", "CUDA_VISIBLE_DEVICES", "nvidia-smi is not on PATH", "/usr/bin:/bin")
    assert calls(clum) == []


def test_an_empty_cuda_visible_devices_has_no_gpu(clum, clean_error):
    clum.script("s.py", SCRIPT)
    clean_error(run(clum, "s.py", "--gpus", 1, CUDA_VISIBLE_DEVICES=""), "found no GPU", "CUDA_VISIBLE_DEVICES=''")


def test_a_failing_nvidia_smi_is_reported_in_its_own_words(clum, clean_error, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: no driver' >&2\nexit 9\n")
    (folder / "nvidia-smi").chmod(0o755)
    clum.script("s.py", SCRIPT)
    r = run(clum, "s.py", "--gpus", "all", PATH=f"{folder}{os.pathsep}/usr/bin:/bin")
    clean_error(r, "found no GPU", "exited with status 9", "NVIDIA-SMI has failed: no driver")


@pytest.mark.parametrize("args, words", [
    (["--gpus", "1,7"], ["GPU 7 is not available", "the GPUs are 0, 1"]),
    (["--gpus", 3], ["asks for 3 GPUs, but only 2 are available"]),
    (["--gpus", "all", "--gpus-per-worker", 3], ["--gpus-per-worker 3 is more than the 2 GPUs"]),
    (["--gpus", "all", "-p", 3], ["-p 3 workers with 1 GPU each need 3 GPUs", "Give -p 2 or less"]),
    (["--gpus", "all", "--gpus-per-worker", 2, "-p", 2], ["-p 2 workers with 2 GPUs each need 4 GPUs"]),
    (["--gpus", 0], ["asks for no GPU"]),
    (["--gpus", "0,0"], ["names a GPU twice"]),
    (["--gpus", "zero;one"], ["does not parse"]),
])
def test_a_spec_that_does_not_fit_the_gpus_is_exit_2_before_any_call(clum, clean_error, args, words):
    clum.script("s.py", SCRIPT)
    clean_error(run(clum, "s.py", *args, CUDA_VISIBLE_DEVICES="0,1"), *words)
    assert calls(clum) == []


FAKE_TORCH_WITH_CUDA = '''\
import sys, types
torch = types.ModuleType("torch")
torch.cuda = types.SimpleNamespace(is_initialized=lambda: True)
sys.modules["torch"] = torch  # as "import torch; torch.zeros(1).cuda()" at the top level leaves it
'''


def test_cuda_initialised_before_fork_is_exit_2_saying_to_use_init_worker_or_spawn(clum, clean_error):
    clum.script("s.py", FAKE_TORCH_WITH_CUDA + SCRIPT)
    r = run(clum, "s.py", "--gpus", "all", CUDA_VISIBLE_DEVICES="0,1")
    clean_error(r, "torch.cuda.is_initialized() is True", "forked", "init_worker()", "--start-method spawn")
    assert calls(clum) == []
    ok(run(clum, "s.py", "--gpus", "all", "--start-method", "spawn", "--quiet", CUDA_VISIBLE_DEVICES="0,1"))
    assert sorted(v for s in gpus_by_worker(clum).values() for v in s) == ["0", "1"]


def test_cuda_initialised_before_fork_without_gpus_is_a_warning(clum):
    clum.script("s.py", FAKE_TORCH_WITH_CUDA + SCRIPT)
    r = ok(run(clum, "s.py", "-p", 1, "--quiet"))
    assert "warning" in r.stderr and "--start-method spawn" in r.stderr
    assert len(calls(clum)) == 12


def test_an_unused_gpu_is_a_warning(clum):
    clum.script("s.py", SCRIPT)
    r = ok(run(clum, "s.py", "--gpus", "all", "--gpus-per-worker", 2, "--quiet", CUDA_VISIBLE_DEVICES="0,1,2"))
    assert "GPU 2 not used: 1 worker with 2 GPUs each" in r.stderr


@pytest.mark.parametrize("value, words", [("0,0", ["names GPU 0 twice"]), ("0,-1,2", ["'-1'", "not a GPU id"])])
def test_gpu_ids_from_cuda_visible_devices_are_checked_as_gpus_checks_its_own(clum, clean_error, value, words):
    clum.script("s.py", SCRIPT)
    r = run(clum, "s.py", "--gpus", "all", "--quiet", CUDA_VISIBLE_DEVICES=value)
    clean_error(r, "CUDA_VISIBLE_DEVICES", *words)
    assert calls(clum) == []


def test_a_gpu_uuid_that_nvidia_smi_lists_is_accepted_and_pins_that_gpu(clum, smi_bin):
    clum.script("s.py", SCRIPT)
    ok(run(clum, "s.py", "--gpus", "GPU-22222222-cccc,GPU-00000000-aaaa", "--quiet",
           PATH=f"{smi_bin}{os.pathsep}{os.environ['PATH']}"))
    assert sorted(v for s in gpus_by_worker(clum).values() for v in s) == ["0", "2"]


def test_a_gpu_id_that_does_not_exist_is_echoed_as_given(clum, clean_error):
    clum.script("s.py", SCRIPT)
    err = clean_error(run(clum, "s.py", "--gpus", "abc", "--quiet", CUDA_VISIBLE_DEVICES="0,1"), "--gpus abc:")
    assert "abc," not in err, err


def test_cluf_gpus_0_does_not_suggest_all_which_cluf_refuses(clum, clean_error):
    import cluf_support as cs

    clum.script("s.py", SCRIPT)
    err = clean_error(cs.run_cluf("s.py", "-n", "2", "-q", "--gpus", "0", cwd=clum.dir, env=cs.base_env(clum.dir)),
                      "--gpus 0 asks for no GPU", "count of at least 1")
    assert "at least 1, all" not in err, err
