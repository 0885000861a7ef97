"""GPUs for clum's workers: parse ``--gpus``, find the GPUs, give each worker slot its own.

``--gpus SPEC`` is ``all``, a count (``2``: the first two found) or a comma list of GPU ids
(``0,2``; one id is written with a comma, ``3,``, or as a UUID).  The GPUs come from
``CUDA_VISIBLE_DEVICES`` when it is set (the scheduler's allocation in a job), else from
``ROCR_VISIBLE_DEVICES`` (AMD), else from ``nvidia-smi -L``.  Worker slot ``i`` gets GPUs
``i*K .. i*K+K-1`` of the chosen ones (``--gpus-per-worker K``) in the variable they came
from, set in the worker before the script is loaded (spawn, forkserver), before
``init_worker()`` and before any call; a worker that replaces one (it died, it timed out)
has the same slot, so the same GPUs.

Nothing here imports a GPU library: under fork it only looks at what the script imported.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..core.errors import SchedulerError, UserError

CUDA, ROCR = "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"
SMI_TIMEOUT = 30  # seconds for nvidia-smi -L
_NONE_VALUES = {"", "NoDevFiles", "-1"}  # what a job without GPUs may hold


def parse_spec(value: Any, name: str = "gpus") -> Any:
    """``all``, a count (an int), or a tuple of GPU ids (strings)."""
    if isinstance(value, bool):
        raise UserError(f"--{name} must be all, a count or a comma list of GPU ids, not {value!r}.")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, (list, tuple)):
        text = ",".join(str(v) for v in value) + ","
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise UserError(f"--{name} must be all, a count or a comma list of GPU ids, not {value!r}.")
    if text.lower() == "all":
        return "all"
    if re.fullmatch(r"\d+", text):
        n = int(text)
        if n < 1:
            raise UserError(f"--{name} 0 asks for no GPU: give a count of at least 1 (clum also takes all, or GPU "
                            f"ids with a comma: 0,1, one id as 0,). Leave --{name} out to run without GPUs.")
        if n > 10_000:
            raise UserError(f"--{name} must be at most 10,000 GPUs, not {n:,}.")
        return n
    ids = tuple(part.strip() for part in text.split(","))
    if ids and ids[-1] == "" and len(ids) > 1:  # "3," is the one id 3
        ids = ids[:-1]
    if not ids or any(not _ID.fullmatch(i) for i in ids):
        raise UserError(f"--{name} {value!r} does not parse: give all, a count (2), or a comma list of GPU ids "
                        f"(0,2 or GPU-<uuid>; one id as 3,).")
    if len(set(ids)) != len(ids):
        raise UserError(f"--{name} {value!r} names a GPU twice: each GPU can go to one worker only.")
    return ids


_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*")  # a GPU index, or a UUID (GPU-..., MIG-...)


def _check_variable(var: str, raw: str, ids: List[str]) -> List[str]:
    """The GPU ids of ``var`` checked as --gpus checks its own: each a GPU id, none twice."""
    bad = [i for i in ids if not _ID.fullmatch(i)]
    if bad:
        raise UserError(f"{var}={raw!r} in this environment holds {bad[0]!r}, which is not a GPU id (CUDA ignores "
                        f"it and every id after it), so clum cannot share these GPUs out. Set {var} to GPU indices "
                        f"or UUIDs (e.g. {var}=0,2), or unset it to use the GPUs nvidia-smi lists.")
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise UserError(f"{var}={raw!r} in this environment names GPU {twice[0]} twice: each GPU can go to one "
                        f"worker only. Set {var} to distinct GPU ids (e.g. {var}=0,1), or unset it to use the GPUs "
                        f"nvidia-smi lists.")
    return ids


def describe(spec: Any) -> str:
    """The spec as it is written on the command line."""
    if isinstance(spec, tuple):
        return ",".join(spec) + ("," if len(spec) == 1 and spec[0].isdigit() else "")  # (3, is one id; 3 a count)
    return str(spec)


def discover(environ: Optional[Mapping[str, str]] = None) -> Tuple[List[str], str, str, bool]:
    """(the GPU ids available, the variable that pins them, where they came from (for messages),
    whether nvidia-smi listed them)."""
    environ = os.environ if environ is None else environ
    for var in (CUDA, ROCR):
        if var in environ:
            raw = environ[var].strip()
            ids = [] if raw in _NONE_VALUES else _check_variable(var, raw, [i.strip() for i in raw.split(",")
                                                                             if i.strip()])
            return ids, var, f"{var}={raw!r} in this environment", False
    tried = f"{CUDA} and {ROCR} are not set, and "
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if smi is None:
        return [], CUDA, tried + f"nvidia-smi is not on PATH ({environ.get('PATH', '')})", False
    from ..core.commands import CommandFailed, run

    try:
        listed_text = run([smi, "-L"], timeout=SMI_TIMEOUT)
    except CommandFailed as e:
        said = (e.stderr.strip() or e.stdout.strip() or "nothing").replace("\n", " ")
        return [], CUDA, tried + f"{smi} -L exited with status {e.status} and said: {said}", False
    except SchedulerError as e:
        return [], CUDA, tried + f"{smi} -L could not be run: {e}", False
    listed = re.findall(r"^GPU (\d+):.*?(?:\(UUID: (\S+?)\))?\s*$", listed_text, re.M)
    ids = [index for index, _ in listed]
    _UUIDS.clear()
    _UUIDS.update({uuid: index for index, uuid in listed if uuid})
    return ids, CUDA, tried + f"{smi} -L listed {len(ids)} GPU{'s' * (len(ids) != 1)}", True


_UUIDS: Dict[str, str] = {}  # the UUID of each GPU that nvidia-smi -L listed, to its index


def choose(spec: Any, available: List[str], where: str) -> List[str]:
    """The GPUs the spec picks out of those available."""
    if not available:
        raise UserError(f"--gpus {describe(spec)}: found no GPU: {where}. On a GPU node, check that the driver "
                        f"works (nvidia-smi -L); in a job, ask the scheduler for GPUs (cluf --gpus N, or "
                        f"its own option); or set {CUDA} to the GPU ids to use.")
    if spec == "all":
        return list(available)
    if isinstance(spec, int):
        if spec > len(available):
            raise UserError(f"--gpus {spec} asks for {spec} GPUs, but only {len(available)} are available "
                            f"({', '.join(available)}; from {where}). Ask for {len(available)} or fewer, or "
                            f"--gpus all.")
        return list(available[:spec])
    spec = tuple(_UUIDS.get(i, i) if i not in available else i for i in spec)  # a UUID nvidia-smi listed
    if len(set(spec)) != len(spec):
        raise UserError("--gpus names a GPU twice (by its index and by its UUID): each GPU can go to one "
                        "worker only.")
    missing = [i for i in spec if i not in available]
    if missing:
        raise UserError(f"--gpus {describe(spec)}: GPU{'s' * (len(missing) != 1)} {', '.join(missing)} "
                        f"{'are' if len(missing) != 1 else 'is'} not available here; the GPUs are "
                        f"{', '.join(available)} (from {where}). Name only those, or give a count or all.")
    return list(spec)


def assign(chosen: List[str], per_worker: int, processes: Optional[int], where: str) -> List[List[str]]:
    """The GPUs of each worker slot: K each, in order; one list per worker."""
    n = len(chosen)
    if per_worker > n:
        raise UserError(f"--gpus-per-worker {per_worker} is more than the {n} GPU{'s' * (n != 1)} chosen "
                        f"({', '.join(chosen)}; from {where}), so no worker could start. Give "
                        f"--gpus-per-worker {n} or less, or choose more GPUs with --gpus.")
    most = n // per_worker
    if processes is not None and processes > most:
        raise UserError(f"-p {processes} workers with {per_worker} GPU{'s' * (per_worker != 1)} each need "
                        f"{processes * per_worker} GPUs, but {n} {'are' if n != 1 else 'is'} chosen "
                        f"({', '.join(chosen)}). Give -p {most} or less (or leave -p out: with --gpus it "
                        f"is the GPUs divided by --gpus-per-worker), or fewer GPUs per worker.")
    count = processes or most
    return [chosen[i * per_worker:(i + 1) * per_worker] for i in range(count)]


class Plan:
    """What --gpus decided: how many workers, and each slot's environment."""

    def __init__(self, slots: List[List[str]], variable: str, from_smi: bool, unused: List[str]) -> None:
        self.slots, self.variable, self.unused = slots, variable, unused
        self.from_smi = from_smi

    @property
    def processes(self) -> int:
        return len(self.slots)

    def env(self, slot: int) -> Dict[str, str]:
        env = {self.variable: ",".join(self.slots[slot])}
        if self.from_smi and "CUDA_DEVICE_ORDER" not in os.environ:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA then numbers the GPUs as nvidia-smi does
        return env


def plan(spec: Any, per_worker: Optional[int], processes: Optional[int], environ: Optional[Mapping[str, str]] = None) -> Optional[Plan]:
    """The GPU plan for clum's options, or None without --gpus / --gpus-per-worker."""
    if spec is None and per_worker is None:
        return None
    spec = "all" if spec is None else spec
    per_worker = per_worker or 1
    available, variable, where, from_smi = discover(environ)
    chosen = choose(spec, available, where)
    slots = assign(chosen, per_worker, processes, where)
    used = {g for s in slots for g in s}
    return Plan(slots, variable, from_smi, [g for g in chosen if g not in used])


class Pinned:
    """A worker's source (see runner.Runner) whose ``load()`` first sets the slot's GPU variables:
    before a spawned worker loads the script, before ``init_worker()`` and every call."""

    def __init__(self, source: Any, env: Mapping[str, str]) -> None:
        self.source, self.env = source, dict(env)

    def load(self) -> Tuple[Callable[..., Any], Optional[Callable[[], Any]]]:
        os.environ.update(self.env)
        return self.source.load()


def cuda_in_parent() -> Optional[str]:
    """Under fork: what says the script's top level already initialised CUDA (a forked worker
    cannot use it then), or None.  Looks only at modules the script imported."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None) if torch is not None else None
    is_initialized = getattr(cuda, "is_initialized", None)
    if callable(is_initialized):
        try:
            if is_initialized():
                return "torch.cuda.is_initialized() is True"
        except Exception:  # noqa: BLE001 - a broken torch is the script's business, not ours
            pass
    return None


def fork_advice(what: str) -> str:
    return (f"the script initialised CUDA before the workers were forked ({what}), and CUDA cannot be used "
            f"in a forked child: every call would fail (\"Cannot re-initialize CUDA in forked subprocess\"). "
            f"Move what touches the GPU (moving a model to it, torch.cuda calls) out of the script's top level "
            f"into init_worker() or target(), or run with --start-method spawn (each worker then loads the "
            f"script itself, with its own GPUs set).")


def for_run(opts: dict, method: Callable[[], str], warn: Callable[[str], None]) -> Optional[Plan]:
    """clum's GPU plan from its options (None without --gpus), checked against the start method
    (``method()``: asked only when CUDA was initialised, as it may import multiprocessing)."""
    gpu_plan = plan(opts.get("gpus"), opts.get("gpus_per_worker"), opts.get("processes"))
    what = cuda_in_parent()
    if what is not None and method() == "fork":
        if gpu_plan is not None:
            raise UserError(fork_advice(what))
        warn(fork_advice(what))
    if gpu_plan is not None and gpu_plan.unused:
        warn(f"GPU{'s' * (len(gpu_plan.unused) != 1)} {', '.join(gpu_plan.unused)} not used: "
             f"{gpu_plan.processes} worker{'s' * (gpu_plan.processes != 1)} with {len(gpu_plan.slots[0])} GPU"
             f"{'s' * (len(gpu_plan.slots[0]) != 1)} each.")
    return gpu_plan
