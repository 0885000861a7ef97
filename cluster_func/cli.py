"""The ``clum`` and ``cluf`` commands: parse, resolve options, hand off, map errors to exit statuses.

Exit statuses: 0 all calls done; 1 some calls failed (or a submission failed);
2 bad input (usage, script, options); 130 interrupted by SIGINT; 143 by SIGTERM.
"""

import argparse
import os
import signal
import sys

from . import __version__, bins, options
from .errors import SubmitError, UserError
from .script import get_args, get_options, get_target, load_script, resolve_path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}. Run '{self.prog} --help' for every option.\n")


def _common(p: argparse.ArgumentParser, prog: str):
    p.add_argument("script", metavar="SCRIPT",
                   help="path of the Python file holding the target function and its args "
                        "('example' finds example.py too)")
    p.add_argument("-t", "--target", metavar="NAME",
                   help="name of the function to call (default: target). Example: -t process_file")
    p.add_argument("-a", "--args", metavar="NAME",
                   help="name of the iterable of arguments, or of a function returning one "
                        "(default: args). Example: -a file_pairs")
    p.add_argument("-p", "--processes", metavar="N",
                   help="worker processes per machine (default: the CPUs this process may use, "
                        f"here {len(os.sched_getaffinity(0))}). Example: -p 8")
    p.add_argument("-b", "--bins", "--bin", metavar="SPEC", dest="bins",
                   help="do only these bins of the work: 'x/y' with x a comma list of bins and "
                        "ranges (default: all the work). Example: -b 0,1/3 or -b 0-2,7/8")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-x", "--hash", metavar="POSITIONS",
                   help="bin by a stable hash of str() of the arguments at these positions, for "
                        "unstable iterators (default: round-robin by position). Example: -x 0 or -x 0-2,7")
    g.add_argument("-k", "--key", metavar="POSITION",
                   help="the argument at this position is the bin number (default: round-robin). "
                        "Example: -k 2")
    p.add_argument("--resume", action="store_const", const=True, default=None,
                   help="skip the calls the journal records as completed (default: start over)")
    p.add_argument("--retries", metavar="N",
                   help="run a failing call again up to N times before it counts as failed (default: 0)")
    p.add_argument("--timeout", metavar="SECONDS",
                   help="stop a call that runs longer, count it failed, go on (default: none). "
                        "Example: --timeout 600")
    p.add_argument("--version", action="version", version=f"{prog} (cluster-func) {__version__}")


def clum_parser():
    p = _Parser(
        prog="clum",
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

exit status: 0 all calls done, 1 some failed, 2 bad input, 130/143 interrupted.""",
        allow_abbrev=False,
    )
    _common(p, "clum")
    p.add_argument("--quiet", action="store_const", const=True, default=None,
                   help="no progress line (default: a progress line when stderr is a terminal)")
    p.add_argument("--journal", metavar="PATH",
                   help="where to keep the run's journal (default: .cluster_func/ next to the script, "
                        "one per script and bin spec)")
    p.add_argument("--failed", action="store_true",
                   help="print the failed calls of the last run from the journal, run nothing")
    return p


def split_passthrough(argv):
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def cli_values(ns, command):
    """The options given on the command line, parsed: {canonical name: value}."""
    out = {}
    for o in options.OPTIONS:
        if command not in o.commands.split():
            continue
        v = getattr(ns, options.attr(o.name), None)
        if v is None or v is False:
            continue
        out[o.name] = o.parse(v, o.name)
    return out


def load(ns, command, passthrough):
    """Load the script; return (module, merged options as a dict of attr names)."""
    path = resolve_path(ns.script)
    given = cli_values(ns, command)
    module = load_script(path, passthrough)
    layers = []
    if command == "cluf":
        layers.append(options.load_rc())
        layers.append(options.from_dict(get_options(module, "clum_options"), "cluf", "clum_options",
                                        ignore_foreign=True))
        layers.append(options.from_dict(get_options(module, "cluf_options"), "cluf", "cluf_options"))
    else:
        layers.append(options.from_dict(get_options(module, "clum_options"), "clum", "clum_options"))
    opts = options.merge(command, *layers, given)
    # --hash and --key exclude each other; the command line replaces what the script set.
    if "hash" in given:
        opts["key"] = None
    elif "key" in given:
        opts["hash"] = None
    if opts.get("hash") is not None and opts.get("key") is not None:
        raise UserError("--hash and --key exclude each other: bin either by a hash of some arguments "
                        "or by an argument that is the bin number, not both (check clum_options/cluf_options).")
    opts["script"] = path
    opts["passthrough"] = list(passthrough)
    return module, opts


def _warn(prog):
    def warn(text):
        sys.stderr.write(f"{prog}: warning: {text}\n")
    return warn


def run_clum(argv):
    from . import journal as journal_mod
    from .runner import Reporter, Runner

    argv, passthrough = split_passthrough(argv)
    ns = clum_parser().parse_args(argv)
    module, opts = load(ns, "clum", passthrough)
    target_name, args_name = opts["target"], opts["args"]
    get_target(module, target_name)
    args = get_args(module, args_name)
    spec = opts["bins"] or bins.BinSpec((0,), 1)
    mode = "hash" if opts["hash"] is not None else "key" if opts["key"] is not None else "round-robin"
    journal_path = opts["journal"] or journal_mod.default_path(opts["script"], str(spec))
    if ns.failed:
        return print_failed(journal_path)

    reporter = Reporter(progress=not opts["quiet"], total=bins.expected_count(args, spec, mode))
    counts = bins.SelectionCounts()
    work = bins.select(args, spec, opts["hash"], opts["key"], counts)
    journal = journal_mod.Journal(journal_path, opts["script"], str(spec), mode, bool(opts["resume"]),
                                  _warn("clum"))
    skipped = [0]
    if opts["resume"] and journal.previous is not None:
        work = bins.Work(journal_mod.resume_filter(work.pairs(), journal.previous, skipped))
    elif opts["resume"]:
        reporter.message(f"--resume: no journal at {journal_path}, so nothing to skip; running everything.")
    processes = opts["processes"] or len(os.sched_getaffinity(0))
    runner = Runner(opts["script"], opts["passthrough"], target_name, processes, work, reporter,
                    journal=journal, retries=opts["retries"], timeout=opts["timeout"])
    outcome = runner.run()
    # Elements whose hash/key position is missing fail without being sent to a worker.
    for position, element, err in counts.bad_elements:
        runner._fail_call(position, element, runner.retries, "IndexError", err, f"IndexError: {err}")
    status = ("interrupted" if outcome.interrupted_by else "aborted" if outcome.fatal else "complete")
    journal.close(outcome.done, outcome.failed, status)
    say = reporter.message
    if opts["resume"] and journal.previous is not None:
        say(f"--resume: skipped {skipped[0]} calls the journal records as completed.")
    if counts.bad_keys:
        say(f"warning: {counts.bad_keys} calls were run by no bin: their key (argument {opts['key']}) "
            f"is not an integer from 0 to {spec.total - 1}. Example: position {counts.first_bad_key[0]}, "
            f"key {counts.first_bad_key[1]!r}.")
    total = outcome.done + outcome.failed
    if outcome.fatal:
        say(f"stopped: {outcome.fatal}. {outcome.done} calls completed before that.")
        return EXIT_FAILED
    if outcome.interrupted_by:
        name = signal.Signals(outcome.interrupted_by).name
        say(f"interrupted by {name}: {outcome.done} calls completed, {outcome.failed} failed; "
            f"the rest did not run. 'clum {ns.script} --resume' skips the completed ones.")
        return 128 + outcome.interrupted_by
    if outcome.failed:
        say(f"{outcome.failed} of {total} calls failed (see above; 'clum {ns.script} --failed' lists them).")
        return EXIT_FAILED
    if not opts["quiet"]:
        say(f"{outcome.done} calls done.")
    return EXIT_OK


def print_failed(journal_path):
    from . import journal as journal_mod

    if not os.path.exists(journal_path):
        raise UserError(f"No journal at {journal_path}: this script and bin spec have not been run "
                        f"(or use --journal PATH to name the journal).")
    st = journal_mod.read(journal_path)
    if st.last_status is None:
        print(f"# the last run did not finish ({st.last_done} calls completed)", file=sys.stderr)
    if not st.last_failed:
        print(f"# no failed calls in the last run ({st.last_done} completed)", file=sys.stderr)
        return EXIT_OK
    for rec in st.last_failed:
        print(f"position {rec.get('pos')}: args {rec.get('args')}: {rec.get('type')}: {rec.get('msg')}")
    return EXIT_FAILED


def guarded(fn, prog, argv):
    try:
        return fn(argv)
    except UserError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return e.exit_status
    except SubmitError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return e.exit_status
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted.\n")
        return 130
    except BrokenPipeError:
        return EXIT_FAILED


def clum_main(argv=None):
    sys.exit(guarded(run_clum, "clum", sys.argv[1:] if argv is None else argv))


def cluf_main(argv=None):
    from .cluf import run_cluf

    sys.exit(guarded(run_cluf, "cluf", sys.argv[1:] if argv is None else argv))
