"""The value parsers of the option table: each takes a command-line string or a Python value
(from ``*_options`` or ``~/.clufrc``) and the option's name, and returns the parsed value or
raises a UserError naming the option.  An option whose value means something else to each
command has a parser per command here (``--results``, ``--gpus``; see table.py)."""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from ..core import bins
from ..core.errors import UserError


# --- value parsers: each takes a CLI string or a Python value from a dict -------

MAX_PROCESSES = 10_000  # worker processes on one machine
MAX_NODES = 1_000_000  # jobs of one cluf run
MAX_WALLTIME = 3650 * 86400  # ten years
MIN_TIMEOUT = 0.01  # seconds: clum looks at running calls at most this often (see local/runner.py)
MAX_CPUS = 10_000  # per job: more than any one node has
MAX_MEMORY = "1024T"  # per job (1 PiB): more than any one node has

def _int(minimum: int | None = None, maximum: int = 10**9, beyond: str | None = None) -> Callable[[Any, str], int]:
    """An integer from ``minimum`` to ``maximum`` (a bound on every count, so that no huge
    value reaches a C integer or a loop: 10**9 unless the option has a smaller one)."""
    def parse(value: Any, name: str) -> int:
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


def _float_positive(value: Any, name: str) -> float:
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


def _timeout(value: Any, name: str) -> float:
    x = _float_positive(value, name)
    if x < MIN_TIMEOUT:
        raise UserError(f"--{name} {value!r} is below the floor of {MIN_TIMEOUT:g} s: clum looks at running calls "
                        f"at most every {MIN_TIMEOUT:g} s, so a shorter limit cannot be kept. Give at least "
                        f"--{name} {MIN_TIMEOUT:g}, or leave it out for no limit.")
    return x


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise UserError(f"--{name} must be true or false, not {value!r}.")


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"--{name} must be a non-empty string, not {value!r}.")
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL character", "\t": "a tab"}


def _control(text: str) -> str | None:
    """What control character ``text`` holds, in words, or None."""
    m = _CONTROL.search(text)
    return None if m is None else _CONTROL_NAMES.get(m.group(), f"the control character {m.group()!r}")


def one_line(value: str, name: str, what: str = "value", shown: Any = None) -> str:
    """Refuse a value that would not stay on one line of a job script (a newline would end a
    directive or comment there and make the rest a shell command of the job)."""
    bad = _control(value)
    if bad:
        raise UserError(f"--{name} {value if shown is None else shown!r}: the {what} holds {bad}, which cannot be part of a job script's "
                        f"directive or comment line (the rest would become a command of the job). Give it on "
                        f"one line, without control characters.")
    return value


def _directive_word(value: Any, name: str) -> str:
    """A queue or account name: one word of a scheduler directive."""
    value = one_line(_str(value, name), name)
    if re.search(r"[\s'\"\\]", value):
        raise UserError(f"--{name} {value!r} cannot be one scheduler directive: it holds a space, a quote or a "
                        f"backslash, which the scheduler would read as more than one word. {name.capitalize()} "
                        f"names are single words, e.g. --{name} long.")
    return value


def _identifier(value: Any, name: str) -> str:
    value = _str(value, name)
    if not value.isidentifier():
        raise UserError(f"--{name} must be a Python name (like my_func), not {value!r}.")
    return value


def _bin_spec(value: Any, name: str) -> bins.BinSpec:
    return bins.parse_bin_spec(value if isinstance(value, str) else str(value))


def _positions(value: Any, name: str) -> tuple[int | str, ...]:
    return bins.parse_positions(value, f"--{name} position list", names=True)


def _position(value: Any, name: str) -> int | str:
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


def _walltime(value: Any, name: str) -> int:
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


def _memory(value: Any, name: str) -> int:
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


def _directive(k: str, v: str | None, name: str, given: Any) -> tuple[str, str | None]:
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


def _key_values(value: Any, name: str) -> dict[str, str | None]:
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
        key, given = _directive(k.strip(), v.strip() if sep else None, name, value)
        out[key] = given
    return out


def _env(value: Any, name: str) -> dict[str, str]:
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


def _file_list(value: Any, name: str) -> list[str]:
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


class OtherForm(UserError):
    """A value in the form the other command takes (clum's --gpus all given to cluf, cluf's
    --results jsonl given to clum): said in its own words wherever it was given (``said(where)``:
    where names the option as given, --NAME on the command line, 'NAME' in SOURCE in a dict)."""

    def __init__(self, said: Callable[[str], str], name: str) -> None:
        super().__init__(said(f"--{name}"))
        self.said = said


def _gpus(value: Any, name: str) -> Any:
    """clum: all, a count or GPU ids, each worker given its own (local/gpus.py)."""
    from ..local.gpus import parse_spec

    return parse_spec(value, name)


def _gpus_per_job(value: Any, name: str) -> int:
    """cluf: the number of GPUs each job asks the scheduler for; all or GPU ids are clum's alone."""
    spec = _gpus(value, name)
    if not isinstance(spec, int):
        raise OtherForm(lambda where: gpus_not_a_count(spec, name), name)
    return spec


def gpus_not_a_count(spec: Any, name: str = "gpus") -> str:
    """cluf's refusal of clum's --gpus all or GPU ids (as ``spec``, parsed)."""
    text = ",".join(map(str, spec)) if isinstance(spec, tuple) else str(spec)
    return (f"cluf --{name} takes the number of GPUs each job asks the scheduler for (e.g. --{name} 2), "
            f"not {text!r}: a job's clum then uses the GPUs the scheduler gave it. Only clum takes all "
            f"or GPU ids; if they come from the script's clum_options, give cluf its own count on the "
            f"command line or in cluf_options (e.g. cluf_options = {{\"gpus\": 2}}).")


class Refused:
    """A value cluf read from ``clum_options`` and cannot take (clum's --gpus all): an error only
    if no later layer (cluf_options, the command line) gives cluf its own (checks.check)."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"Refused({self.message!r})"


def _gpus_from_clum(value: Any, name: str) -> int | Refused:
    """cluf reading clum_options: a count is the GPUs per job; all or GPU ids are refused unless
    cluf is given its own count."""
    spec = _gpus(value, name)
    return spec if isinstance(spec, int) else Refused(gpus_not_a_count(spec, name))


def _choice(*choices: str) -> Callable[[Any, str], str]:
    def parse(value: Any, name: str) -> str:
        if value not in choices:
            raise UserError(f"--{name} must be one of {', '.join(choices)}, not {value!r}.")
        return value
    return parse


def _results(value: Any, name: str) -> str:
    """clum: the results file, a path ending in .jsonl or .pkl."""
    from ..record.results import format_of

    text = _str(value, name)
    if _format_word(text) is not None:
        fmt = "." + text.lower().lstrip(".")
        raise OtherForm(lambda where: f"--{name} takes a file name with clum, e.g. --{name} values{fmt} "
                                      f"(only cluf takes just the format, and names one file per bin).", name)
    if os.path.isdir(os.path.expanduser(text)):
        raise UserError(f"--{name} {text} is a directory. Name a file in it, e.g. --{name} "
                        f"{os.path.join(text, 'values.jsonl')} (.jsonl or .pkl).")
    format_of(text)
    return os.path.abspath(os.path.expanduser(text))


def _format_word(value: Any) -> str | None:
    """jsonl or pkl (a leading dot allowed), or None."""
    from ..record import formats  # (the registered results formats)

    text = value.lower().lstrip(".") if isinstance(value, str) else None
    return text if text in formats.names() else None


def _results_format(value: Any, name: str) -> str:
    """cluf: the format of the values, jsonl or pkl (each bin writes its own file in the jobs dir).
    A file name is refused, not silently ignored."""
    fmt = _format_word(_str(value, name))
    if fmt is not None:
        return fmt
    path = _results(value, name)  # (a file name that is no results file: that error first)
    fmt = path.rsplit(".", 1)[-1]
    raise OtherForm(lambda where: f"cluf {where} takes a format, jsonl or pkl, not a file name ({path}): each bin "
                                  f"writes its own file in the jobs dir (<script>-<i>-<n>.results.{fmt}), and "
                                  f"'cluf --gather JOBS_DIR -o {os.path.basename(path)}' merges them into one. Use "
                                  f"--{name} {fmt}.", name)


def _results_from_clum(value: Any, name: str) -> str:
    """cluf reading clum_options: clum's results file stands for its format."""
    fmt = _format_word(_str(value, name))
    return fmt if fmt is not None else _results(value, name).rsplit(".", 1)[-1].lower()


def _path(value: Any, name: str) -> str:
    return os.path.abspath(os.path.expanduser(_str(value, name)))


def _dir(value: Any, name: str) -> str:
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

