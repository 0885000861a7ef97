"""The option table: every option of clum and cluf, declared once.

Both commands' parsers (cli.py), the ``*_options`` dicts and ``~/.clufrc`` (``options.from_dict``),
the jobs' clum command (``options.forwarded``) and the Python API's keywords (api/cluster.py) are
made from :data:`OPTIONS`.  An option that means something else to each command (``--results``:
clum's file, cluf's format; ``--gpus``: clum's GPUs per worker, cluf's per job; ``--bins``,
``--walltime``) has a :class:`Meaning` per command: its own parser, help, metavar and section.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Union

from .. import schedulers
from ..core import bins
from .values import (MAX_CPUS, MAX_NODES, MAX_PROCESSES, _bin_spec, _bool, _choice, _dir, _directive_word, _env,
                     _file_list, _float_positive, _gpus, _gpus_from_clum, _gpus_per_job, _identifier, _int,
                     _key_values, _memory, _path, _position, _positions, _results, _results_format,
                     _results_from_clum, _timeout, _walltime)


def _fwd_str(value: Any, opts: Mapping[str, Any]) -> list[str]:
    return [str(value)]


def _fwd_float(value: Any, opts: Mapping[str, Any]) -> list[str]:
    return [f"{value:.15g}"]


def _fwd_positions(value: Any, opts: Mapping[str, Any]) -> list[str]:
    return [bins.format_positions(value)]


def _fwd_walltime(value: Any, opts: Mapping[str, Any]) -> list[str]:
    from ..schedulers.base import hms

    return [hms(value)]


def _fwd_grace(value: Any, opts: Mapping[str, Any]) -> list[str]:
    return [f"{value:.15g}"] if opts.get("walltime") else []


def _fwd_gpus_per_worker(value: Any, opts: Mapping[str, Any]) -> list[str]:
    return [str(value)] if opts.get("gpus") is not None else []


Parser = Callable[[Any, str], Any]  # (value, option name) -> the value parsed, or UserError
Text = Union[str, Callable[[], str]]  # a help text, or a function giving it when --help is built
Forward = Callable[[Any, Mapping[str, Any]], list[str]]  # (value, opts) -> the words after --NAME


_RESULTS_HELP = ("write what target returns, with each call's position, to the file PATH: .jsonl (JSON Lines) "
                 "or .pkl (pickles); read it with cluster_func.read_results (default: values are dropped). ")
_WALLTIME_FORMS = ("DURATION is HH:MM:SS, D-HH:MM:SS or a whole number with a unit (90s, 30m, 12h, 2d, "
                   "1h30m); a bare number is refused (Slurm reads minutes, PBS seconds). ")


@dataclass(frozen=True)
class Meaning:
    """What an option is to one command, where it differs from the entry's own fields (None:
    the entry's): the parser of its value, its help, metavar and section of ``--help``, and
    ``from_clum``: how cluf reads the value when it comes from ``clum_options`` (written for
    clum; None: with its own parser)."""
    parse: Parser | None = None
    help: Text | None = None
    metavar: str | None = None
    group: str | None = None
    from_clum: Parser | None = None


@dataclass(frozen=True)
class Option:
    """One option, declared once: the parsers (cli.py), the ``*_options`` dicts and ``~/.clufrc``
    (``options.from_dict``), the job scripts' clum command (``options.forwarded``) and the checks
    against other options (``options.check``) are all made from this table.

    ``per``: a command's own :class:`Meaning` where the option differs between the commands;
    ``group`` names a section of ``--help`` (see cli._groups); ``flag``: takes no value;
    ``exclusive``: options with the same name exclude each other on the command line;
    ``forward(value, opts)``: the words after ``--NAME`` in each cluf job's clum command
    (None: cluf does not pass it on); ``in_dicts``: may be set in ``*_options`` and ``~/.clufrc``
    (a mode such as ``--failed`` may not)."""
    name: str  # long name, with dashes
    parse: Parser
    default: Any = None
    commands: str = "clum cluf"  # which commands accept it (on the CLI and in *_options)
    # other spellings on the command line, before --NAME (or a function that gives them)
    flags: tuple[str, ...] | Callable[[], Iterable[str]] = ()
    metavar: str | None = None
    help: Text = ""
    group: str = "main"
    flag: bool = False
    exclusive: str | None = None
    repeat: bool = False
    forward: Forward | None = None
    per: Mapping[str, Meaning] = field(default_factory=dict)
    in_dicts: bool = True

    def spellings(self) -> tuple[str, ...]:
        """The other spellings (a scheduler's are asked of its module only when cluf's parser is built)."""
        return tuple(self.flags()) if callable(self.flags) else self.flags

    def meaning(self, command: str) -> Meaning:
        """What the option is to ``command``: its own meaning over the entry's fields."""
        own = self.per.get(command) or Meaning()
        return Meaning(parse=own.parse or self.parse, help=self.help if own.help is None else own.help,
                       metavar=own.metavar or self.metavar, group=own.group or self.group,
                       from_clum=own.from_clum)

    def read(self, value: Any, command: str, written_for: str | None = None) -> Any:
        """The value parsed as ``command`` means it; ``written_for="clum"``: cluf reading
        ``clum_options``."""
        m = self.meaning(command)
        if written_for is not None and written_for != command and m.from_clum is not None:
            return m.from_clum(value, self.name)
        parse = m.parse if m.parse is not None else self.parse  # (meaning() gives one always)
        return parse(value, self.name)

    def text(self, what: str, command: str) -> Any:
        """The command's ``help``, ``metavar`` or ``group`` (a help given as a function, called)."""
        v = getattr(self.meaning(command), what)
        return v() if callable(v) else v


def _raw_directives(name: str) -> Option:
    """The option of one scheduler's raw directives (pbs-options, slurm-options, ...): its short
    spelling and help asked of the scheduler's module only when cluf's parser is built."""
    def flags() -> tuple[str, ...]:
        return tuple(filter(None, [schedulers.SCHEDULERS[name].options_short]))

    def help() -> str:
        return schedulers.SCHEDULERS[name].options_help

    return Option(schedulers.options_key(name), _key_values, None, "cluf", flags, "K=V,...", group="sched", help=help)


OPTIONS = [
    # cluf's first: the most used options come first in its --help
    Option("nodes", _int(1, MAX_NODES), None, "cluf", ("-n",), "N", exclusive="count",
           help="number of jobs (nodes): bin i of N each. Example: -n 12"),
    Option("iterations", _int(1), None, "cluf", ("-i",), "K", exclusive="count",
           help="about K calls per job: cluf counts the calls (which may take a while) and makes "
                "ceil(count/K) jobs. Example: -i 200"),
    Option("jobs-dir", _dir, None, "cluf", ("-j",), "DIR",
           help="where job scripts, their stdout/stderr, journals and the manifest go (default: the current "
                "directory; created if missing). Example: -j jobs"),
    Option("no-q", _bool, False, "cluf", ("-q", "-no-q"), flag=True,
           help="write the job scripts but submit nothing (default: submit them). Example: -q"),
    Option("target", _identifier, "target", flags=("-t",), metavar="NAME", forward=_fwd_str,
           help="name of the function to call (default: target). Example: -t process_file"),
    Option("args", _identifier, "args", flags=("-a",), metavar="NAME", forward=_fwd_str,
           help="name of the iterable of arguments, or of a function returning one (default: args). "
                "Example: -a file_pairs"),
    Option("processes", _int(1, MAX_PROCESSES), None, flags=("-p",), metavar="N", forward=_fwd_str,
           help=lambda: ("worker processes per machine (default: the CPUs this process may use, "
                         f"here {len(os.sched_getaffinity(0))}). Example: -p 8")),
    Option("bins", _bin_spec, None, flags=("-b", "--bin"), metavar="SPEC", per={
        "clum": Meaning(help="do only these bins of the work: 'x/y' with x a comma list of bins and ranges "
                             "(default: all the work). Example: -b 0,1/3 or -b 0-2,7/8"),
        "cluf": Meaning(help="write and submit only these of the N jobs: 'x/N' with x a comma list of bins and "
                             "ranges, N the number of jobs (default: all N). Example: -n 12 -b 3,7/12")}),
    Option("hash", _positions, None, flags=("-x", "-hash"), metavar="POSITIONS", group="bins",
           exclusive="binning", forward=_fwd_positions,
           help="bin by a stable hash of str() of the arguments at these positions, for unstable iterators; a "
                "name is a keyword argument of cluster_func.Arguments elements (default: round-robin by "
                "position). Example: -x 0 or -x 0-2,7 or -x 0,scale"),
    Option("key", _position, None, flags=("-k", "-key"), metavar="POSITION", group="bins", exclusive="binning",
           forward=_fwd_str,
           help="the argument at this position (or the keyword argument of this name) is the bin number "
                "(default: round-robin). Example: -k 2 or -k label"),
    Option("resume", _bool, False, flag=True,
           help="skip the calls the journal records as completed (default: start over). "
                "Example: clum sweep.py --resume"),
    Option("quiet", _bool, False, "clum", flag=True,
           help="no progress line (default: a progress line when stderr is a terminal). "
                "Example: clum sweep.py --quiet"),
    Option("results", _results, None, per={
        # clum: the file; cluf: the format, each bin writing its own file (clum_options' file: its format)
        "clum": Meaning(metavar="PATH", help=_RESULTS_HELP + "Example: --results scores.jsonl"),
        "cluf": Meaning(_results_format, metavar="FORMAT", from_clum=_results_from_clum,
                        help="collect what target returns in the format FORMAT, jsonl or pkl: each bin writes its "
                             "own file <script>-<i>-<n>.results.FORMAT in the jobs dir, and 'cluf --gather' merges "
                             "them (default: values are dropped). Example: --results jsonl")}),
    Option("wait", _bool, False, "cluf", flag=True,
           help="after submitting, wait for the run as 'cluf --wait' does (default: return at once). "
                "Example: cluf sweep.py -n 100 --walltime 24:00:00 --wait"),
    Option("retries", _int(0), 0, metavar="N", group="calls", forward=lambda v, o: [str(v)] if v else [],
           help="run a failing call again up to N times before it counts as failed (default: 0). "
                "Example: --retries 2"),
    Option("timeout", _timeout, None, metavar="SECONDS", group="calls", forward=_fwd_float,
           help="stop a call that runs longer, count it failed, go on (default: none). Example: --timeout 600"),
    Option("walltime", _walltime, None, metavar="DURATION", forward=_fwd_walltime, per={
        "clum": Meaning(group="calls",
                        help="stop this run before its time limit: no new call starts a grace period before it, "
                             "running calls are stopped at it (not failed), exit 75; --resume does the rest "
                             "(default: no limit). " + _WALLTIME_FORMS + "Example: --walltime 12:00:00"),
        "cluf": Meaning(group="sched",
                        help="time limit per job; a job stops a grace period before it and its bin continues in a "
                             "new job with --resume (default: the scheduler's). " + _WALLTIME_FORMS
                             + "Example: --walltime 24:00:00")}),
    Option("grace", _float_positive, None, metavar="SECONDS", group="calls", forward=_fwd_grace,
           help="with --walltime: start no new call this long before it (default: 5%% of the walltime, at "
                "least 10 s, at most 600 s). Example: --grace 300"),
    Option("start-method", _choice("fork", "spawn", "forkserver"), None, metavar="METHOD", group="calls",
           forward=_fwd_str,
           help="how workers start: fork (default on Linux: the script is loaded once and workers share its "
                "memory), spawn or forkserver (each worker loads the script itself: for scripts that open "
                "connections or start threads at import). Example: --start-method spawn"),
    Option("journal", _path, None, "clum", metavar="PATH", group="calls",
           help="where to keep the run's journal (default: .cluster_func/ next to the script, one per script "
                "and bin spec). Example: --journal runs/sweep.journal"),
    Option("max-restarts", _int(0), 20, "cluf", metavar="N", group="calls",
           help="a bin stopped at its walltime continues in a new job at most N times, while each job "
                "completes at least one call (default: 20). Example: --max-restarts 5"),
    Option("gpus", _gpus, None, group="main", forward=_fwd_str, per={
        # clum: which GPUs, each worker given its own; cluf: how many each job asks for (the jobs' clum
        # gets the count: all of the job's)
        "clum": Meaning(metavar="SPEC",
                        help="give each worker its own GPU(s) through CUDA_VISIBLE_DEVICES: all, a count, or a comma "
                             "list of GPU ids (one id as 3,); the GPUs are CUDA_VISIBLE_DEVICES if set (a job's), "
                             "else nvidia-smi -L; -p defaults to the GPUs divided by --gpus-per-worker (default: no "
                             "GPU pinning). Example: --gpus all or --gpus 0,2"),
        "cluf": Meaning(_gpus_per_job, metavar="N", from_clum=_gpus_from_clum,
                        help="GPUs per job, as the scheduler spells it (Slurm --gres=gpu:N, PBS ngpus=N, Torque "
                             "gpus=N, Grid Engine -l gpu=N, LSF -gpu num=N); each job's clum gives each worker its "
                             "own (default: none). Example: --gpus 4")}),
    Option("gpus-per-worker", _int(1, 10_000), None, metavar="K", forward=_fwd_gpus_per_worker,
           help="with --gpus: K GPUs for each worker (default: 1). Example: --gpus-per-worker 2"),
    Option("failed", _bool, False, "clum", flag=True, in_dicts=False,  # a mode: it runs nothing
           help="print the failed calls of the last run from the journal, run nothing (default: off). "
                "Example: clum sweep.py --failed"),
    # cluf: resources and the scheduler
    Option("scheduler", _choice("auto", *schedulers.names()), "auto", "cluf", metavar="NAME", group="sched",
           help=lambda: (f"{', '.join(schedulers.names())} or auto (default: auto: "
                         f"{schedulers.detection_text()}). Example: --scheduler slurm")),
    Option("memory", _memory, None, "cluf", metavar="SIZE", group="sched",
           help="memory per job: a number with a unit K, M, G or T (powers of 1024; B or iB optional); a bare "
                "number is refused (Slurm reads megabytes, PBS bytes) (default: the scheduler's). "
                "Example: --memory 4G or --memory 500M"),
    Option("queue", _directive_word, None, "cluf", metavar="NAME", group="sched",
           help="PBS queue, Slurm partition or SGE queue (default: the scheduler's). Example: --queue long"),
    Option("account", _directive_word, None, "cluf", metavar="NAME", group="sched",
           help="account to charge (default: the scheduler's). Example: --account proj42"),
    Option("cpus", _int(1, MAX_CPUS, "more CPUs than any one node has"), None, "cluf", metavar="N", group="sched",
           help="cores per job (default: --processes if given, else with --gpus one per worker, else the "
                "scheduler's). Example: --cpus 8"),
    # raw directives for each scheduler: pbs-options (-o), slurm-options, ...
    *(_raw_directives(name) for name in schedulers.names()),
    Option("array", _bool, False, "cluf", flag=True, group="sched",
           help="submit one job array of N tasks instead of N jobs; run one bin of it by hand with "
                "CLUF_BIN=<bin> bash SCRIPT (default: N jobs). Example: -n 200 --array"),
    Option("max-running", _int(1), None, "cluf", metavar="K", group="sched",
           help="with --array: at most K tasks running at once, where the scheduler supports it (default: no "
                "limit). Example: --max-running 20"),
    # cluf: what else goes into the job scripts
    Option("env", _env, None, "cluf", ("-e",), "NAME[=VALUE]", group="scripts", repeat=True,
           help="set a variable in every job; NAME alone copies this shell's value. Repeatable. Nothing else of "
                "this environment reaches the jobs (default: none). Example: -e OMP_NUM_THREADS=1 -e HOME"),
    Option("prepend-script", _file_list, None, "cluf", ("-P",), "FILES", group="scripts",
           help="shell files (comma-separated) whose text goes before the command in each job script "
                "(default: none). Example: -P modules.sh"),
    Option("append-script", _file_list, None, "cluf", ("-A",), "FILES", group="scripts",
           help="shell files (comma-separated) whose text goes after the command (default: none). "
                "Example: -A cleanup.sh"),
]
BY_NAME = {o.name: o for o in OPTIONS}
