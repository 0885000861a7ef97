"""The ``clum`` and ``cluf`` commands: parse, resolve options, hand off, map errors to exit statuses.

Exit statuses: 0 all calls done; 1 some calls failed (or a submission failed);
2 bad input (usage, script, options); 70 a bug in cluster-func (an exception escaped from inside
the tool: one line saying so, then its traceback); 75 clum stopped at its --walltime with work
left (--resume does the rest); 130 interrupted by SIGINT; 143 by SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import textwrap
import traceback
from types import FrameType, ModuleType
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, TextIO, Tuple

from . import __version__, options
from . import schedulers
from .core.errors import Interrupted, SubmitError, UserError
from .core.script import get_options, load_script, resolve_path, shadowing_note, split_passthrough

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_BUG = 70  # EX_SOFTWARE: an exception escaped from inside the tool


class _Parser(argparse.ArgumentParser):
    passthrough: Sequence[str] = ()  # the words after '--', for the message when SCRIPT is missing

    def parse_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                   namespace: Optional[argparse.Namespace] = None) -> argparse.Namespace:
        return super().parse_args(self._negative_values(sys.argv[1:] if args is None else list(args)), namespace)

    def _negative_values(self, argv: List[str]) -> List[str]:
        """``--bins -1/3``: a value that starts with '-' and a digit is the option's value (argparse
        would take it for an option and say "expected one argument"); it is given as --bins=-1/3."""
        out: List[str] = []
        k = 0
        while k < len(argv):
            a = argv[k]
            action = self._option_string_actions.get(a)
            if (action is not None and action.nargs is None and k + 1 < len(argv)
                    and re.match(r"-\d", argv[k + 1])):
                out.append(f"{a}={argv[k + 1]}" if a.startswith("--") else a + argv[k + 1])
                k += 2
                continue
            out.append(a)
            k += 1
        return out

    def error(self, message: str) -> NoReturn:
        if "SCRIPT" in message and "required" in message and self.passthrough:
            message += (f" (everything after '--' goes to the script as its sys.argv[1:], so the script must "
                        f"come before '--': {self.prog} {self.passthrough[0]} [options] -- ARGS)")
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}. Run '{self.prog} --help' for every option.\n")


def _add_options(p: argparse.ArgumentParser, g: dict, prog: str) -> None:
    """Every option of ``prog`` from the one table (options.OPTIONS), as ``prog`` means it, in its
    help group, in the table's order; SCRIPT (after cluf's first four); then --version."""
    exclusive: Dict[str, Any] = {}
    script_after = "no-q" if prog == "cluf" else None
    if script_after is None:
        _script(g["main"])
    for o in options.OPTIONS:
        if prog not in o.commands.split():
            continue
        group = g.get(o.text("group", prog)) or g["calls"]
        if o.exclusive:
            if o.exclusive not in exclusive:
                exclusive[o.exclusive] = group.add_mutually_exclusive_group()
            group = exclusive[o.exclusive]
        spelt = o.spellings()
        flags = [*(f for f in spelt if len(f) == 2), f"--{o.name}", *(f for f in spelt if len(f) > 2)]
        if o.flag:
            kwargs = dict(action="store_const", const=True, default=None)
        else:
            kwargs = dict(metavar=o.text("metavar", prog), action="append" if o.repeat else "store")
        group.add_argument(*flags, dest=options.attr(o.name), help=o.text("help", prog), **kwargs)
        if o.name == script_after:
            _script(g["main"])
    p.add_argument("--version", action="version", version=f"{prog} (cluster-func) {__version__}")


def _script(group: Any) -> None:
    group.add_argument("script", metavar="SCRIPT",
                       help="path of the Python file holding the target function and its args "
                            "('example' finds example.py too)")


def _groups(p: argparse.ArgumentParser, prog: str) -> Dict[str, Any]:
    """The help's sections, the most used options first (the order of --help)."""
    g = {"main": p.add_argument_group("the most used options")}
    if prog == "cluf":
        g["sched"] = p.add_argument_group("resources and the scheduler")
        g["scripts"] = p.add_argument_group("what else goes into the job scripts")
    g["bins"] = p.add_argument_group("binning for iterators that are not stable (default: round-robin)")
    g["calls"] = p.add_argument_group("failing calls, time limits, workers" + (", the journal" if prog == "clum"
                                                                              else ""))
    return g


def clum_parser() -> _Parser:
    p = _Parser(
        prog="clum", usage="clum [options] SCRIPT [-- ARGS FOR THE SCRIPT...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Call target(*a) for every a in the script's args, on all cores of this machine.",
        epilog="""Everything after '--' becomes the script's sys.argv[1:].
Options may also be set in a dict called clum_options in the script; the command line wins.

examples:
  clum process_files.py                    all the work, every core
  clum process_files.py -p 4 -b 0/3        a third of it, on 4 processes
  clum sweep.py -t run_one -a settings -- --data big.csv
  clum sweep.py --resume                   skip what the last run completed
  clum sweep.py --failed                   list the calls that failed last time
  clum sweep.py --results scores.jsonl     keep what target returns, with each position
  clum sweep.py --walltime 12:00:00        stop before 12 hours; --resume does the rest

exit status: 0 all calls done, 1 some failed, 2 bad input, 70 a bug in cluster-func,
75 stopped at --walltime with work left, 130/143 interrupted.""",
        allow_abbrev=False,
    )
    _add_options(p, _groups(p, "clum"), "clum")
    return p


def cluf_parser() -> _Parser:
    titles = [schedulers.SCHEDULERS[n].title for n in schedulers.names()]
    p = _Parser(
        prog="cluf", usage="cluf [options] (-n NODES | -i ITERATIONS) SCRIPT [-- ARGS FOR THE SCRIPT...]\n"
                           "       cluf (--status | --resubmit | --cancel | --wait | --gather [-o PATH]) [JOBS_DIR]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill("Split the calls of target(*a) for every a in the script's args into one "
                                  "job script per node and submit them to the cluster's scheduler "
                                  f"({', '.join(titles[:-1])} or {titles[-1]}). Each job runs clum on its bin.",
                                  width=79),
        epilog="""Everything after '--' becomes the script's sys.argv[1:] (in every job).
Options may also be set in a dict called cluf_options in the script, and user-wide
in ~/.clufrc (JSON); the command line wins over the script, the script over ~/.clufrc.

examples:
  cluf process_files.py -n 12                       12 jobs, bin i of 12 each
  cluf process_files.py -i 200                      as many jobs as make ~200 calls each
  cluf process_files.py -n 4 -q -j jobs             write 4 job scripts to jobs/, submit nothing
  cluf sweep.py -n 12 -b 3,7/12                     (re)submit two of the twelve
  cluf sweep.py -n 8 --walltime 12:00:00 --memory 4G --cpus 4 -e OMP_NUM_THREADS=4
  cluf sweep.py -n 8 -P modules.sh --slurm-options qos=long,constraint=avx2
  cluf sweep.py -n 200 --array --max-running 20     one job array of 200 tasks

after submitting (JOBS_DIR defaults to the current directory):
  cluf --status [JOBS_DIR]     a table of every bin: job, state, calls done/failed/total;
                               exit 0 only when all is done with no failed call
  cluf --resubmit [JOBS_DIR]   submit again, with --resume, the bins that failed, vanished
                               or have failed calls (never one queued or running)
  cluf --cancel [JOBS_DIR]     cancel every queued or running job of the run
  cluf --gather [JOBS_DIR]     merge the bins' --results files into one (-o PATH), in position order

exit status: 0 all written (and submitted), 1 a submission failed, 2 bad input,
70 a bug in cluster-func, 130/143 interrupted.""",
        allow_abbrev=False,
    )
    _add_options(p, _groups(p, "cluf"), "cluf")
    return p


def cluf_manage_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cluf", allow_abbrev=False,
                description="Check, finish or stop a submitted cluf run.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--status", action="store_true",
                   help="a table of every bin: job id, state (queued, running, done, failed, vanished), "
                        "calls done/failed/total; exit 0 only when all is done with no failed call")
    g.add_argument("--resubmit", action="store_true",
                   help="submit again, with --resume, the bins that failed, vanished, or are done with "
                        "failed calls; never one that is queued or running")
    g.add_argument("--cancel", action="store_true", help="cancel every queued or running job of the run")
    g.add_argument("--wait", action="store_true",
                   help="block until every bin is done, failed or cancelled (continuing bins that stopped at "
                        "their walltime), then print the --status table and exit with its status; Ctrl-C "
                        "stops waiting, not the jobs. Example: cluf --wait jobs")
    g.add_argument("--gather", action="store_true",
                   help="merge the bins' --results files into one, in position order, and say how many "
                        "positions have no value yet (exit 1 if any). Example: cluf --gather jobs -o all.jsonl")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="with --gather: the merged file, .jsonl or .pkl (default: <script>-<N>.results.<format> "
                        "in the jobs dir)")
    p.add_argument("jobs_dir", metavar="JOBS_DIR", nargs="?", help="the run's jobs dir (default: .)")
    p.add_argument("-j", "--jobs-dir", dest="jobs_dir_opt", metavar="DIR", help="the same as JOBS_DIR")
    return p


def cli_values(ns: argparse.Namespace, command: str) -> Dict[str, Any]:
    """The options given on the command line, parsed as ``command`` means them: {canonical name: value}."""
    out: Dict[str, Any] = {}
    for o in options.OPTIONS:
        if command not in o.commands.split():
            continue
        v = getattr(ns, options.attr(o.name), None)
        if v is None or v is False:
            continue
        out[o.name] = o.read(v, command)
    return out


def load(ns: argparse.Namespace, command: str, passthrough: List[str]) -> Tuple[ModuleType, Dict[str, Any]]:
    """Load the script; return (module, merged options as a dict of attr names)."""
    path = resolve_path(ns.script)
    given = cli_values(ns, command)
    module = load_script(path, passthrough)
    shadows = shadowing_note(path)
    if shadows:
        sys.stderr.write(f"{command}: warning: {shadows}\n")
    layers = []
    if command == "cluf":
        layers.append(options.load_rc())
        layers.append(options.from_dict(get_options(module, "clum_options"), "cluf", "clum_options",
                                        ignore_foreign=True, written_for="clum"))
        layers.append(options.from_dict(get_options(module, "cluf_options"), "cluf", "cluf_options"))
    else:
        layers.append(options.from_dict(get_options(module, "clum_options"), "clum", "clum_options",
                                        ignore_foreign=True))
    opts = options.merge(command, *layers, given)
    # --hash and --key exclude each other; the command line replaces what the script set.
    if "hash" in given:
        opts["key"] = None
    elif "key" in given:
        opts["hash"] = None
    # -n and -i likewise (cluf): the one on the command line wins over cluf_options / ~/.clufrc.
    if "nodes" in given:
        opts["iterations"] = None
    elif "iterations" in given:
        opts["nodes"] = None
    options.check(opts)
    opts["script"] = path
    opts["passthrough"] = list(passthrough)
    return module, opts


def run_clum(argv: Sequence[str]) -> int:
    from .local import run as local_run

    argv, passthrough = split_passthrough(argv)
    parser = clum_parser()
    parser.passthrough = passthrough
    ns = parser.parse_args(argv)
    module, opts = load(ns, "clum", passthrough)
    return local_run.run(ns, module, opts)

MANAGE = ("--status", "--resubmit", "--cancel", "--gather")


def _manages(argv: Sequence[str]) -> bool:
    """cluf manages a submitted run: --status, --resubmit, --cancel, --gather, or --wait with
    no script (every word that is not an option names a directory: the jobs dir)."""
    if any(a in MANAGE for a in argv):
        return True
    words = [a for a in argv if not a.startswith("-")]
    return "--wait" in argv and all(os.path.isdir(w) for w in words)


def run_cluf(argv: Sequence[str]) -> int:
    argv_all = list(argv)
    argv, passthrough = split_passthrough(argv)
    if _manages(argv):
        from .cluster import status

        ns = cluf_manage_parser().parse_args(argv)
        ns.jobs_dir = ns.jobs_dir or ns.jobs_dir_opt
        if ns.status:
            return status.status(ns.jobs_dir)
        if ns.resubmit:
            from .cluster.submission import resubmit

            return resubmit(ns.jobs_dir)
        if ns.wait:
            return status.wait(ns.jobs_dir)
        if ns.gather:
            from .cluster.gather import gather

            return gather(ns.jobs_dir, ns.output)
        return status.cancel(ns.jobs_dir)
    from .cluster import submission

    parser = cluf_parser()
    parser.passthrough = passthrough
    ns = parser.parse_args(argv)
    module, opts = load(ns, "cluf", passthrough)
    return submission.run(module, opts, options.forwarded(opts), argv_all)

def _raise_interrupted(signum: int, frame: Optional[FrameType]) -> NoReturn:
    raise Interrupted(signum)


def _drop_working_directory_from_path() -> None:
    """``python -m cluster_func`` (what job scripts run) and ``python -c`` put the working directory
    first on ``sys.path``, where the ``clum``/``cluf`` commands put their own folder: a ``random.py``
    there would then replace the standard module that cluster-func imports before it loads the
    script.  The script's own folder goes on ``sys.path`` when it is loaded, as under ``clum``."""
    if sys.path and not getattr(sys.flags, "safe_path", False) and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]


def guarded(fn: Callable[[Sequence[str]], int], prog: str, argv: Sequence[str]) -> int:
    _drop_working_directory_from_path()
    # SIGINT and SIGTERM at any moment: an orderly stop (the runner has its own handling while
    # it runs; before and after, these turn into Interrupted).
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _DropOnClosedPipe):
            setattr(sys, name, _DropOnClosedPipe(stream))
    os.register_at_fork(after_in_child=_DropOnClosedPipe.unwrap)
    try:
        return fn(argv)
    except Interrupted as e:
        sys.stderr.write(f"{prog}: interrupted by {signal.Signals(e.signum).name}.\n")
        return 128 + e.signum
    except UserError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return e.exit_status
    except SubmitError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return e.exit_status
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted.\n")
        return 130
    except Exception:  # noqa: BLE001 - anything else is ours: say so, never mix it with the calls' failures
        sys.stderr.write(f"{prog}: internal error: this is a bug in cluster-func {__version__}, not in your "
                         f"script; please report it {_where_to_report()} with the command you ran and "
                         f"this traceback:\n")
        traceback.print_exc()
        return EXIT_BUG


def _where_to_report() -> str:
    try:
        from importlib.metadata import metadata

        url = metadata("cluster-func").get("Home-page")  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        url = None
    return f"at {url.rstrip('/')}/issues" if url and "github.com" in url else \
        "on the issue tracker of cluster-func's repository"


class _DropOnClosedPipe:
    """Our own stdout/stderr: once the reader has gone (``clum s.py | head -1``), what we write
    is dropped instead of raising BrokenPipeError; the run goes on.  Only in the process that
    made it: a forked worker (the target's own printing) still sees the error."""

    def __init__(self, stream: TextIO) -> None:
        self._stream, self._pid, self._gone = stream, os.getpid(), False

    @staticmethod
    def unwrap() -> None:
        """In a forked worker: the plain streams again (the target's printing is its own)."""
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, _DropOnClosedPipe):
                setattr(sys, name, stream._stream)

    def _call(self, method: str, *a: Any) -> Any:
        if self._gone and os.getpid() == self._pid:
            return None
        try:
            return getattr(self._stream, method)(*a)
        except BrokenPipeError:
            if os.getpid() != self._pid:
                raise
            self._gone = True
            try:  # what is still buffered goes nowhere, also when Python flushes at exit
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass
            return None

    def write(self, text: str) -> int:
        self._call("write", text)
        return len(text)

    def flush(self) -> None:
        self._call("flush")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def clum_main(argv: Optional[Sequence[str]] = None) -> None:
    sys.exit(guarded(run_clum, "clum", sys.argv[1:] if argv is None else argv))


def cluf_main(argv: Optional[Sequence[str]] = None) -> None:
    sys.exit(guarded(run_cluf, "cluf", sys.argv[1:] if argv is None else argv))
