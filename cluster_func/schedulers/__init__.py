"""The schedulers cluf can submit to, and how ``--scheduler auto`` picks one."""

import os
import shutil

from ..errors import UserError
from .base import JobSpec, Scheduler  # noqa: F401
from .pbs import PBS
from .sge import GridEngine
from .slurm import Slurm

SCHEDULERS = {"pbs": PBS, "slurm": Slurm, "sge": GridEngine}


def detect(submitting: bool) -> Scheduler:
    """``sbatch`` on PATH: Slurm; ``qsub`` with ``SGE_ROOT`` set: Grid Engine; else PBS."""
    if shutil.which("sbatch"):
        return Slurm()
    if shutil.which("qsub"):
        return GridEngine() if os.environ.get("SGE_ROOT") else PBS()
    if submitting:
        raise UserError(
            "--scheduler auto found no scheduler to submit to: looked on PATH for sbatch (Slurm) and "
            "qsub (PBS/Torque, or Grid Engine when SGE_ROOT is set) and found neither. Run cluf on a "
            "cluster login node, name one with --scheduler pbs|slurm|sge, or write the job scripts "
            "without submitting them with -q/--no-q.")
    return PBS()


def get(name: str, submitting: bool) -> Scheduler:
    if name == "auto":
        return detect(submitting)
    if name not in SCHEDULERS:
        raise UserError(f"--scheduler must be one of auto, {', '.join(SCHEDULERS)}, not {name!r}.")
    return SCHEDULERS[name]()
