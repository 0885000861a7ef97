"""Option definitions, validation and merging.

Precedence, lowest first: built-in defaults < ``~/.clufrc`` (cluf only) <
``clum_options`` (cluf reads the keys it shares with clum) < ``cluf_options``
< the command line.  Keys may be written ``jobs-dir`` or ``jobs_dir``.
"""

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .core import bins
from . import schedulers
from .core.errors import UserError
from .core.walltime import grace_seconds, no_time_for_calls


# --- value parsers: each takes a CLI string or a Python value from a dict -------

MAX_PROCESSES = 10_000  # worker processes on one machine
MAX_NODES = 1_000_000  # jobs of one cluf run
MAX_WALLTIME = 3650 * 86400  # ten years
MIN_TIMEOUT = 0.01  # seconds: clum looks at running calls at most this often (see local/runner.py)
MAX_CPUS = 10_000  # per job: more than any one node has
MAX_MEMORY = "1024T"  # per job (1 PiB): more than any one node has

def _int(minimum=None, maximum=10**9, beyond=None):
    """An integer from ``minimum`` to ``maximum`` (a bound on every count, so that no huge
    value reaches a C integer or a loop: 10**9 unless the option has a smaller one)."""
    def parse(value, name):
        if isinstance(value, bool):
            raise UserError(f"--{name} must be an integer, not {value!r}.")
        try:
            n = int(value)
            if isinstance(value, float) and value != n:
                raise ValueError
        except (TypeError, ValueError):
            raise UserError(f"--{name} must be an integer, not {value!r}.") from None
        if minimum is not None and n < minimum:
            raise UserError(f"--{name} must be at least {minimum}, not {n}.")
        if n > maximum:
            raise UserError(f"--{name} must be at most {maximum:,}" + (f" ({beyond})" if beyond else "")
                            + f", not {n:,}.")
        return n
    return parse


def _float_positive(value, name):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--{name} must be a number of seconds, not {value!r}.") from None
    if not x > 0:
        raise UserError(f"--{name} must be more than 0 seconds, not {value!r}.")
    if x > MAX_WALLTIME:
        raise UserError(f"--{name} {value!r} is more than {MAX_WALLTIME // 86400} days; give fewer seconds"
                        + (", or leave --timeout out for no limit." if name == "timeout" else "."))
    return x


def _timeout(value, name):
    x = _float_positive(value, name)
    if x < MIN_TIMEOUT:
        raise UserError(f"--{name} {value!r} is below the floor of {MIN_TIMEOUT:g} s: clum looks at running calls "
                        f"at most every {MIN_TIMEOUT:g} s, so a shorter limit cannot be kept. Give at least "
                        f"--{name} {MIN_TIMEOUT:g}, or leave it out for no limit.")
    return x


def _bool(value, name):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise UserError(f"--{name} must be true or false, not {value!r}.")


def _str(value, name):
    if not isinstance(value, str) or not value:
        raise UserError(f"--{name} must be a non-empty string, not {value!r}.")
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL character", "\t": "a tab"}


def _control(text):
    """What control character ``text`` holds, in words, or None."""
    m = _CONTROL.search(text)
    return None if m is None else _CONTROL_NAMES.get(m.group(), f"the control character {m.group()!r}")


def one_line(value, name, what="value", shown=None):
    """Refuse a value that would not stay on one line of a job script (a newline would end a
    directive or comment there and make the rest a shell command of the job)."""
    bad = _control(value)
    if bad:
        raise UserError(f"--{name} {value if shown is None else shown!r}: the {what} holds {bad}, which cannot be part of a job script's "
                        f"directive or comment line (the rest would become a command of the job). Give it on "
                        f"one line, without control characters.")
    return value


def _directive_word(value, name):
    """A queue or account name: one word of a scheduler directive."""
    value = one_line(_str(value, name), name)
    if re.search(r"[\s'\"\\]", value):
        raise UserError(f"--{name} {value!r} cannot be one scheduler directive: it holds a space, a quote or a "
                        f"backslash, which the scheduler would read as more than one word. {name.capitalize()} "
                        f"names are single words, e.g. --{name} long.")
    return value


def _identifier(value, name):
    value = _str(value, name)
    if not value.isidentifier():
        raise UserError(f"--{name} must be a Python name (like my_func), not {value!r}.")
    return value


def _bin_spec(value, name):
    return bins.parse_bin_spec(value if isinstance(value, str) else str(value))


def _positions(value, name):
    return bins.parse_positions(value, f"--{name} position list", names=True)


def _position(value, name):
    p = bins.parse_positions(value, f"--{name} position", names=True)
    if len(p) != 1:
        raise UserError(f"--{name} takes one argument position (a non-negative integer) or the name of one "
                        f"keyword argument, not {value!r}.")
    return p[0]


WALLTIME_FORMS = ("HH:MM:SS (12:00:00, or 100:00:00 for 100 hours), D-HH:MM:SS (1-12:00:00), or a whole "
                  "number with a unit: 90s, 30m, 12h, 2d, or several: 1h30m, 1d12h")
_WALLTIME_CLOCK = re.compile(r"(?:(\d+)-)?(\d+):(\d+):(\d+)")
_WALLTIME_UNITS = re.compile(r"(?:\d+[dhms])+", re.I)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def _walltime(value, name):
    """A duration as HH:MM:SS, D-HH:MM:SS or with units (90s, 30m, 12h, 2d, 1h30m); returns seconds.

    Bare numbers are refused, strings and Python ints alike: Slurm reads a bare number as
    minutes, PBS and Grid Engine as seconds.  So is MM:SS: to a person 12:00 reads as 12 hours.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"--{name} must be a duration written as {WALLTIME_FORMS}; not {value!r}.")
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d*)?", text):
        how = "a string such as '2h' or '02:00:00'" if not isinstance(value, str) else "2h or 02:00:00"
        raise UserError(f"--{name} {value!r} is ambiguous: a bare number is minutes to Slurm and seconds to PBS "
                        f"and Grid Engine, so none is accepted. Write {WALLTIME_FORMS}; e.g. {how}.")
    if re.fullmatch(r"\d+:\d+", text):
        raise UserError(f"--{name} {value!r} is ambiguous: two fields read as HH:MM to people and as MM:SS to "
                        f"the schedulers. Write all three, HH:MM:SS (00:{text} or {text}:00), or use a unit "
                        f"(30m, 12h).")
    m = _WALLTIME_CLOCK.fullmatch(text)
    if m:
        days, h, mi, sec = (int(x or 0) for x in m.groups())
        if mi >= 60 or sec >= 60:
            raise UserError(f"--{name} {value!r}: minutes and seconds must be below 60 (HH:MM:SS).")
        total = days * 86400 + h * 3600 + mi * 60 + sec
    elif _WALLTIME_UNITS.fullmatch(text):
        total = sum(int(n) * _UNIT_SECONDS[u.lower()] for n, u in re.findall(r"(\d+)([dhms])", text, re.I))
    else:
        raise UserError(f"--{name} {value!r} does not parse: write {WALLTIME_FORMS}.")
    if total <= 0:
        raise UserError(f"--{name} {value!r} must be more than zero.")
    if total > MAX_WALLTIME:
        raise UserError(f"--{name} {value!r} is more than {MAX_WALLTIME // 86400} days.")
    return total


MEMORY_FORMS = "a number with a unit: 4G, 500M, 16GB, 1.5G, 2T (K, M, G, T are powers of 1024; B and iB are optional)"
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT])(?:i?B)?", re.I)


def _memory(value, name):
    """4G, 500M, 16GB, 1.5GiB; returns megabytes (an int).  Bare numbers are refused, strings and
    Python ints alike: megabytes to Slurm, bytes to PBS."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"--{name} must be a size, {MEMORY_FORMS}; not {value!r}.")
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d*)?\s*B?", text, re.I):
        raise UserError(f"--{name} {value!r} has no unit: a bare number is megabytes to Slurm and bytes to PBS, "
                        f"so none is accepted. Write {MEMORY_FORMS}"
                        + (" (as a string in cluf_options or ~/.clufrc)." if not isinstance(value, str) else "."))
    m = _MEMORY.fullmatch(text)
    if not m:
        raise UserError(f"--{name} {value!r} does not parse: write {MEMORY_FORMS}.")
    mb = float(m.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2).upper()]
    if mb < 1:
        raise UserError(f"--{name} {value!r} is below one megabyte.")
    if mb > 1024 ** 3:  # MAX_MEMORY in megabytes
        raise UserError(f"--{name} {value!r} is more memory than any scheduler can grant one job: the limit is "
                        f"{MAX_MEMORY} (one pebibyte), more than any one node has. Give the memory one job needs, "
                        f"e.g. --{name} 64G.")
    return int(round(mb))


_DIRECTIVE_KEY = re.compile(r"-{0,2}[A-Za-z0-9_][A-Za-z0-9_.:-]*")
_QUOTED = re.compile(r"\"[^\"\\]*\"|'[^'\\]*'")


def _directive(k, v, name, given):
    """Check one raw directive K=V: each becomes one line of the job script."""
    one_line(k, name, f"name {k!r}", given)
    if not _DIRECTIVE_KEY.fullmatch(k):
        raise UserError(f"--{name} {given!r}: {k!r} cannot be the name of one scheduler directive (names are "
                        f"letters, digits, '_', '.', ':' and '-', without spaces). Example: --{name} mem=4gb.")
    if v is not None:
        one_line(v, name, f"value of {k}", given)
        if re.search(r"\s", v) and not _QUOTED.fullmatch(v):
            raise UserError(f"--{name} {given!r}: the value of {k}, {v!r}, holds a space, which the scheduler "
                            f"would read as more than one word of the directive. Write it without spaces, or "
                            f"quote the whole value for the scheduler ({k}=\"{v}\").")
    return k, v


def _key_values(value, name):
    """'a=1,b=2' or a dict -> dict of str to str (a value may be None for a bare flag); each
    pair must be able to be one directive line."""
    if isinstance(value, dict):
        return dict(_directive(str(k), None if v is None else str(v), name, value) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        out = {}
        for item in value:
            out.update(_key_values(item, name))
        return out
    if not isinstance(value, str):
        raise UserError(f"--{name} must be key=value pairs separated by commas, not {value!r}.")
    out = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not k.strip():
            raise UserError(f"--{name} {value!r}: {part!r} has no name before '='.")
        k, v = _directive(k.strip(), v.strip() if sep else None, name, value)
        out[k] = v
    return out


def _env(value, name):
    """NAME=VALUE or NAME (copy from the submitting shell); repeatable; returns a dict."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, dict):
        items = [f"{k}={v}" for k, v in value.items()]
    out = {}
    for item in items:
        if not isinstance(item, str):
            raise UserError(f"--env takes NAME=VALUE or NAME, not {item!r}.")
        k, sep, v = item.partition("=")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
            raise UserError(f"--env {item!r}: {k!r} is not a valid environment variable name.")
        if not sep:
            if k not in os.environ:
                raise UserError(
                    f"--env {k}: {k} is not set in this shell, so there is no value to copy. "
                    f"Set it, or give the value with --env {k}=VALUE."
                )
            v = os.environ[k]
        if not isinstance(v, str) or "\x00" in v:
            raise UserError(f"--env {k}: the value {v!r} is not a string without NUL characters.")
        out[k] = v
    return out


def _file_list(value, name):
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    if not any(str(item).strip() for item in items):
        raise UserError(f"--{name} is empty: give one or more files, comma-separated, e.g. modules.sh.")
    out = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        one_line(item, name, "file name")  # it is named in a comment of the job script
        path = os.path.abspath(os.path.expanduser(item))
        if os.path.isdir(path):
            raise UserError(f"--{name}: {item!r} is a directory; give the shell file(s) whose text goes "
                            f"into the job scripts.")
        if not os.path.isfile(path):
            raise UserError(f"--{name}: the file {item!r} does not exist (looked for {path}).")
        if not os.access(path, os.R_OK):
            raise UserError(f"--{name}: the file {path} cannot be read (permission denied).")
        out.append(path)
    return out


def _gpus(value, name):
    from .local.gpus import parse_spec

    return parse_spec(value, name)


def _choice(*choices):
    def parse(value, name):
        if value not in choices:
            raise UserError(f"--{name} must be one of {', '.join(choices)}, not {value!r}.")
        return value
    return parse


def _results(value, name):
    """clum: a path ending in .jsonl or .pkl; cluf: that too, or just the format (each bin gets
    its own file in the jobs dir)."""
    from .record.results import format_of

    from .record import formats

    text = _str(value, name)
    if text.lower().lstrip(".") in formats.names():
        return "." + text.lower().lstrip(".")
    if os.path.isdir(os.path.expanduser(text)):
        raise UserError(f"--results {text} is a directory. Name a file in it, e.g. --results "
                        f"{os.path.join(text, 'values.jsonl')} (.jsonl or .pkl).")
    format_of(text)
    return os.path.abspath(os.path.expanduser(text))


def _path(value, name):
    return os.path.abspath(os.path.expanduser(_str(value, name)))


def _dir(value, name):
    """A directory that exists or can be made (its path goes into the job scripts' directives)."""
    path = _path(one_line(_str(value, name), name, "path"), name)
    if os.path.islink(path) and not os.path.exists(path):
        raise UserError(f"--{name} {value}: a symbolic link to {os.readlink(path)!r}, which does not exist.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--{name} {value}: {path} exists and is not a directory. Name a directory (it is "
                        f"created if missing).")
    if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"--{name} {value}: the directory {path} is not writable.")
    return path


def _both(clum, cluf):
    """A help text (or group) that differs between the commands."""
    return {"clum": clum, "cluf": cluf}


def _fwd_str(value, opts):
    return [str(value)]


def _fwd_float(value, opts):
    return [f"{value:.15g}"]


def _fwd_positions(value, opts):
    return [bins.format_positions(value)]


def _fwd_walltime(value, opts):
    from .schedulers.base import hms

    return [hms(value)]


def _fwd_grace(value, opts):
    return [f"{value:.15g}"] if opts.get("walltime") else []


def _fwd_gpus(value, opts):
    return [str(value)] if isinstance(value, int) else []


def _fwd_gpus_per_worker(value, opts):
    return [str(value)] if opts.get("gpus") is not None else []


_RESULTS_HELP = ("write what target returns, with each call's position, to the file PATH: .jsonl (JSON Lines) "
                 "or .pkl (pickles); read it with cluster_func.read_results (default: values are dropped). ")
_WALLTIME_FORMS = ("DURATION is HH:MM:SS, D-HH:MM:SS or a whole number with a unit (90s, 30m, 12h, 2d, "
                   "1h30m); a bare number is refused (Slurm reads minutes, PBS seconds). ")


@dataclass(frozen=True)
class Option:
    """One option, declared once: the parsers (cli.py), the ``*_options`` dicts and ``~/.clufrc``
    (:func:`from_dict`), the job scripts' clum command (:func:`forwarded`) and the checks
    against other options (:func:`check`) are all made from this table.

    ``help`` and ``group`` may differ by command (a dict ``{"clum": ..., "cluf": ...}``);
    ``group`` names a section of ``--help`` (see cli._groups); ``flag``: takes no value;
    ``exclusive``: options with the same name exclude each other on the command line;
    ``forward(value, opts)``: the words after ``--NAME`` in each cluf job's clum command
    (None: cluf does not pass it on)."""
    name: str  # long name, with dashes
    parse: Callable[[Any, str], Any]
    default: Any = None
    commands: str = "clum cluf"  # which commands accept it (on the CLI and in *_options)
    flags: Any = ()  # other spellings on the command line, before --NAME (or a function that gives them)
    metavar: Optional[str] = None
    help: Any = ""
    group: Any = "main"
    flag: bool = False
    exclusive: Optional[str] = None
    repeat: bool = False
    forward: Optional[Callable[[Any, dict], list]] = None

    def spellings(self) -> tuple:
        """The other spellings (a scheduler's are asked of its module only when cluf's parser is built)."""
        return tuple(self.flags()) if callable(self.flags) else self.flags

    def text(self, what, command):
        v = getattr(self, what)
        v = v.get(command) if isinstance(v, dict) else v
        return v() if callable(v) else v


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
    Option("bins", _bin_spec, None, flags=("-b", "--bin"), metavar="SPEC", help=_both(
        "do only these bins of the work: 'x/y' with x a comma list of bins and ranges (default: all the "
        "work). Example: -b 0,1/3 or -b 0-2,7/8",
        "write and submit only these of the N jobs: 'x/N' with x a comma list of bins and ranges, N the "
        "number of jobs (default: all N). Example: -n 12 -b 3,7/12")),
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
    Option("results", _results, None, metavar=_both("PATH", "FORMAT"), help=_both(
        _RESULTS_HELP + "Example: --results scores.jsonl",
        "collect what target returns in the format FORMAT, jsonl or pkl: each bin writes its own file "
        "<script>-<i>-<n>.results.FORMAT in the jobs dir, and 'cluf --gather' merges them (default: values "
        "are dropped). Example: --results jsonl")),
    Option("wait", _bool, False, "cluf", flag=True,
           help="after submitting, wait for the run as 'cluf --wait' does (default: return at once). "
                "Example: cluf sweep.py -n 100 --walltime 24:00:00 --wait"),
    Option("retries", _int(0), 0, metavar="N", group="calls", forward=lambda v, o: [str(v)] if v else [],
           help="run a failing call again up to N times before it counts as failed (default: 0). "
                "Example: --retries 2"),
    Option("timeout", _timeout, None, metavar="SECONDS", group="calls", forward=_fwd_float,
           help="stop a call that runs longer, count it failed, go on (default: none). Example: --timeout 600"),
    Option("walltime", _walltime, None, metavar="DURATION", group=_both("calls", "sched"), forward=_fwd_walltime,
           help=_both("stop this run before its time limit: no new call starts a grace period before it, running "
                      "calls are stopped at it (not failed), exit 75; --resume does the rest (default: no limit). "
                      + _WALLTIME_FORMS + "Example: --walltime 12:00:00",
                      "time limit per job; a job stops a grace period before it and its bin continues in a new "
                      "job with --resume (default: the scheduler's). " + _WALLTIME_FORMS
                      + "Example: --walltime 24:00:00")),
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
    Option("gpus", _gpus, None, metavar=_both("SPEC", "N"), group="main", forward=_fwd_gpus, help=_both(
        "give each worker its own GPU(s) through CUDA_VISIBLE_DEVICES: all, a count, or a comma list of GPU "
        "ids (one id as 3,); the GPUs are CUDA_VISIBLE_DEVICES if set (a job's), else nvidia-smi -L; -p "
        "defaults to the GPUs divided by --gpus-per-worker (default: no GPU pinning). Example: --gpus all or "
        "--gpus 0,2",
        "GPUs per job, as the scheduler spells it (Slurm --gres=gpu:N, PBS ngpus=N, Torque gpus=N, Grid "
        "Engine -l gpu=N, LSF -gpu num=N); each job's clum gives each worker its own (default: none). "
        "Example: --gpus 4")),
    Option("gpus-per-worker", _int(1, 10_000), None, metavar="K", forward=_fwd_gpus_per_worker,
           help="with --gpus: K GPUs for each worker (default: 1). Example: --gpus-per-worker 2"),
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
    *(Option(schedulers.options_key(name), _key_values, None, "cluf",
             lambda name=name: tuple(filter(None, [schedulers.SCHEDULERS[name].options_short])), "K=V,...",
             group="sched", help=lambda name=name: schedulers.SCHEDULERS[name].options_help)
      for name in schedulers.names()),
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


def canonical(key: str) -> str:
    return key.strip().replace("_", "-").lstrip("-")


def attr(name: str) -> str:
    return name.replace("-", "_")


def valid_keys(command: str):
    return [o.name for o in OPTIONS if command in o.commands.split()]


def from_dict(d: dict, command: str, source: str, ignore_foreign=False) -> dict:
    """Validate a ``*_options`` dict; return {canonical name: parsed value}.

    ``ignore_foreign``: accept and skip keys that are valid for the other command
    (cluf reading ``clum_options``; clum reading a ``clum_options`` shared with cluf,
    e.g. ``jobs-dir``).
    """
    out = {}
    allowed = set(valid_keys(command))
    for key, value in d.items():
        if not isinstance(key, str):
            raise UserError(f"{source} has a key {key!r} that is not a string.")
        name = canonical(key)
        if name not in allowed:
            if ignore_foreign and name in BY_NAME:
                continue
            raise UserError(
                f"{source} has an unknown option {key!r}. Valid keys are: "
                f"{', '.join(sorted(allowed))} (dashes or underscores both work)."
            )
        try:
            out[name] = BY_NAME[name].parse(value, name)
        except UserError as e:
            raise UserError(f"In {source}, option {key!r}: {e}") from None
    return out


def load_rc(path: Optional[str] = None) -> dict:
    """The user-wide defaults file ``~/.clufrc`` (JSON, the same keys as cluf_options).  ``CLUFRC=PATH``
    names another, which must exist; ``CLUFRC=`` (empty) or ``CLUFRC=/dev/null``: none."""
    named = path is None and "CLUFRC" in os.environ
    if named and os.environ["CLUFRC"] in ("", os.devnull):
        return {}
    path = path or os.environ.get("CLUFRC") or os.path.expanduser("~/.clufrc")
    if os.path.islink(path) and not os.path.exists(path):
        raise UserError(f"The defaults file {path} is a symbolic link to {os.readlink(path)!r}, which does not "
                        f"exist. Fix or remove it (CLUFRC=path names another).")
    if not os.path.exists(path):
        if named:
            raise UserError(f"CLUFRC names the defaults file {path}, which does not exist (looked in "
                            f"{os.getcwd()}). Fix the path, create the file (a JSON object of option names to "
                            f"values), or set CLUFRC= (empty) for no defaults file.")
        return {}
    if not os.path.isfile(path):  # a FIFO would block the read; a directory cannot be read
        raise UserError(f"The defaults file {path} is not a regular file. It must be a JSON object of option "
                        f"names to values (CLUFRC=path names another).")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"Could not read the defaults file {path}: {e}. It must be a JSON object.") from None
    if not isinstance(data, dict):
        raise UserError(f"The defaults file {path} must hold a JSON object of option names to values.")
    return from_dict(data, "cluf", f"the defaults file {path}")


def merge(command: str, *layers: dict) -> dict:
    """Defaults, then each layer over the last; returns {attr_name: value}."""
    merged = {o.name: o.default for o in OPTIONS if command in o.commands.split()}
    for layer in layers:
        for k, v in layer.items():
            if v is None:
                continue
            if k == "env" and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}  # variables add up across layers
            else:
                merged[k] = v
    return {attr(k): v for k, v in merged.items()}


def forwarded(opts) -> list:
    """The options each cluf job passes on to its clum (other than --bins and --journal), as
    words: every option of the table with a ``forward``, from its value in ``opts``."""
    words = []
    for o in OPTIONS:
        value = opts.get(attr(o.name))
        if o.forward is None or value is None or value is False:
            continue
        more = o.forward(value, opts)
        if more:
            words += [f"--{o.name}", *more]
    return words


# --- options against each other -------------------------------------------------------------

def check(opts):
    """The checks of options against each other, for both commands, once every source is merged
    (the command line, ``*_options``, ``~/.clufrc``); before anything is written."""
    if opts.get("hash") is not None and opts.get("key") is not None:
        raise UserError("--hash and --key exclude each other: bin either by a hash of some arguments "
                        "or by an argument that is the bin number, not both (check clum_options/cluf_options).")
    walltime, grace = opts.get("walltime"), opts.get("grace")
    if grace is not None and not walltime:
        raise UserError("--grace only applies with --walltime (how long before the walltime to start no new "
                        "call). Example: --walltime 12:00:00 --grace 300")
    if grace is not None and grace >= walltime:
        raise UserError(f"--grace {grace:g} is not shorter than --walltime ({walltime} s): no call could "
                        f"ever start. Give a grace period shorter than the walltime, or leave it out (5% of it).")
    if walltime and grace is None and grace_seconds(walltime) >= walltime:
        raise UserError(no_time_for_calls(walltime))

