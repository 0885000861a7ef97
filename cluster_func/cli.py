"""The ``clum`` and ``cluf`` commands: parse, resolve options, hand off, map errors to exit statuses.

Exit statuses: 0 all calls done; 1 some calls failed (or a submission failed);
2 bad input (usage, script, options); 130 interrupted by SIGINT; 143 by SIGTERM.
"""

import argparse
import os
import shlex
import shutil
import signal
import sys

from . import __version__, bins, options
from .errors import Interrupted, SubmitError, UserError
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
    g.add_argument("-x", "--hash", "-hash", metavar="POSITIONS",
                   help="bin by a stable hash of str() of the arguments at these positions, for "
                        "unstable iterators (default: round-robin by position). Example: -x 0 or -x 0-2,7")
    g.add_argument("-k", "--key", "-key", metavar="POSITION",
                   help="the argument at this position is the bin number (default: round-robin). "
                        "Example: -k 2")
    p.add_argument("--resume", action="store_const", const=True, default=None,
                   help="skip the calls the journal records as completed (default: start over). "
                        "Example: clum sweep.py --resume")
    p.add_argument("--retries", metavar="N",
                   help="run a failing call again up to N times before it counts as failed (default: 0). "
                        "Example: --retries 2")
    p.add_argument("--timeout", metavar="SECONDS",
                   help="stop a call that runs longer, count it failed, go on (default: none). "
                        "Example: --timeout 600")
    p.add_argument("--start-method", metavar="METHOD",
                   help="how workers start: fork (default on Linux: the script is loaded once and "
                        "workers share its memory), spawn or forkserver (each worker loads the script "
                        "itself: for scripts that open connections or start threads at import). "
                        "Example: --start-method spawn")
    p.add_argument("--version", action="version", version=f"{prog} (cluster-func) {__version__}")


def clum_parser():
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

exit status: 0 all calls done, 1 some failed, 2 bad input, 130/143 interrupted.""",
        allow_abbrev=False,
    )
    _common(p, "clum")
    p.add_argument("--quiet", action="store_const", const=True, default=None,
                   help="no progress line (default: a progress line when stderr is a terminal). "
                        "Example: clum sweep.py --quiet")
    p.add_argument("--journal", metavar="PATH",
                   help="where to keep the run's journal (default: .cluster_func/ next to the script, "
                        "one per script and bin spec). Example: --journal runs/sweep.journal")
    p.add_argument("--failed", action="store_true",
                   help="print the failed calls of the last run from the journal, run nothing "
                        "(default: off). Example: clum sweep.py --failed")
    return p


def cluf_parser():
    p = _Parser(
        prog="cluf", usage="cluf [options] (-n NODES | -i ITERATIONS) SCRIPT [-- ARGS FOR THE SCRIPT...]\n"
                           "       cluf (--status | --resubmit | --cancel) [JOBS_DIR]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Split the calls of target(*a) for every a in the script's args into one job "
                    "script per node and submit them to the cluster's scheduler (PBS, Slurm or Grid "
                    "Engine). Each job runs clum on its bin.",
        epilog="""Everything after '--' becomes the script's sys.argv[1:] (in every job).
Options may also be set in a dict called cluf_options in the script, and user-wide
in ~/.clufrc (JSON); the command line wins over the script, the script over ~/.clufrc.

examples:
  cluf process_files.py -n 12                       12 jobs, bin i of 12 each
  cluf process_files.py -i 200                      as many jobs as make ~200 calls each
  cluf process_files.py -n 4 -q -j jobs             write jobs/*.pbs, submit nothing
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

exit status: 0 all written (and submitted), 1 a submission failed, 2 bad input.""",
        allow_abbrev=False,
    )
    _common(p, "cluf")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-n", "--nodes", metavar="N", help="number of jobs (nodes): bin i of N each. Example: -n 12")
    g.add_argument("-i", "--iterations", metavar="K",
                   help="about K calls per job: cluf counts the calls (which may take a while) "
                        "and makes ceil(count/K) jobs. Example: -i 200")
    p.add_argument("-j", "--jobs-dir", metavar="DIR",
                   help="where job scripts, their stdout/stderr, journals and the manifest go "
                        "(default: the current directory; created if missing). Example: -j jobs")
    p.add_argument("-q", "--no-q", "-no-q", action="store_const", const=True, default=None,
                   help="write the job scripts but submit nothing (default: submit them). "
                        "Example: -q (the seed's spelling -no-q works too)")
    p.add_argument("--scheduler", metavar="NAME",
                   help="pbs, slurm, sge or auto (default: auto: sbatch on PATH means slurm; qsub "
                        "with SGE_ROOT set means sge; otherwise pbs)")
    p.add_argument("-e", "--env", metavar="NAME[=VALUE]", action="append",
                   help="set a variable in every job; NAME alone copies this shell's value. "
                        "Repeatable. Nothing else of this environment reaches the jobs "
                        "(default: none). Example: -e OMP_NUM_THREADS=1 -e HOME")
    p.add_argument("-P", "--prepend-script", metavar="FILES",
                   help="shell files (comma-separated) whose text goes before the command in "
                        "each job script (default: none). Example: -P modules.sh")
    p.add_argument("-A", "--append-script", metavar="FILES",
                   help="shell files (comma-separated) whose text goes after the command "
                        "(default: none). Example: -A cleanup.sh")
    p.add_argument("--walltime", metavar="HH:MM:SS", help="time limit per job (default: the "
                   "scheduler's). Example: --walltime 12:00:00")
    p.add_argument("--memory", metavar="SIZE", help="memory per job (default: the scheduler's). "
                   "Example: --memory 4G")
    p.add_argument("--queue", metavar="NAME", help="PBS queue, Slurm partition or SGE queue "
                   "(default: the scheduler's). Example: --queue long")
    p.add_argument("--account", metavar="NAME", help="account to charge (default: the "
                   "scheduler's). Example: --account proj42")
    p.add_argument("--cpus", metavar="N", help="cores per job (default: --processes if given, else "
                   "the scheduler's). Example: --cpus 8")
    p.add_argument("-o", "--pbs-options", metavar="K=V,...",
                   help="raw PBS directives: each becomes '#PBS -l K=V', except name, stdout, "
                        "stderr, queue, ppn (-N, -o, -e, -q, -l nodes=1:ppn=N). Example: -o mem=4gb,ppn=8")
    p.add_argument("--slurm-options", metavar="K=V,...",
                   help="raw Slurm directives: each becomes '#SBATCH --K=V'. Example: --slurm-options qos=long")
    p.add_argument("--sge-options", metavar="K=V,...",
                   help="raw Grid Engine directives: each becomes '#$ -l K=V'. Example: --sge-options h_vmem=4G")
    p.add_argument("--array", action="store_const", const=True, default=None,
                   help="submit one job array of N tasks instead of N jobs (default: N jobs)")
    p.add_argument("--max-running", metavar="K",
                   help="with --array: at most K tasks running at once, where the scheduler "
                        "supports it (default: no limit). Example: --max-running 20")
    return p


def cluf_manage_parser():
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
    p.add_argument("jobs_dir", metavar="JOBS_DIR", nargs="?", help="the run's jobs dir (default: .)")
    p.add_argument("-j", "--jobs-dir", dest="jobs_dir_opt", metavar="DIR", help="the same as JOBS_DIR")
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
        layers.append(options.from_dict(get_options(module, "clum_options"), "clum", "clum_options",
                                        ignore_foreign=True))
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
    from . import worker
    from .runner import Reporter, Runner
    from .script import get_init_worker

    argv, passthrough = split_passthrough(argv)
    ns = clum_parser().parse_args(argv)
    module, opts = load(ns, "clum", passthrough)
    target_name, args_name = opts["target"], opts["args"]
    target = get_target(module, target_name)
    init_worker = get_init_worker(module)
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
    try:
        resumed = None
        if opts["resume"] and journal.previous is not None:
            resumed = work = journal_mod.ResumeWork(work, journal.previous, mode)
            recorded = journal.previous.recorded
            if reporter.total is not None:
                reporter.total = max(0, reporter.total - recorded)
            reporter.message(f"--resume: the journal records {recorded} calls as completed; they are skipped "
                             f"unless their arguments changed"
                             + (f" ({reporter.total} calls to run)." if reporter.total is not None else "."))
        elif opts["resume"]:
            reporter.message(f"--resume: no journal at {journal_path}, so nothing to skip; running everything.")
        cpus = len(os.sched_getaffinity(0))
        processes = opts["processes"] or cpus
        if processes > 4 * cpus:
            _warn("clum")(f"-p {processes} is far above the {cpus} CPUs this process may use: calls will "
                          f"share the CPUs (fine for calls that wait on I/O, slower for computing ones).")
        method = start_method(opts)
        if method == "fork":
            source = worker.Inherited(target, init_worker)
        else:
            source = worker.FromScript(opts["script"], opts["passthrough"], target_name)
        runner = Runner(source, processes, work, reporter, journal=journal, retries=opts["retries"],
                        timeout=opts["timeout"], start_method=method)
        outcome = runner.run()
    except Interrupted as e:  # before the runner took over the signals
        from .runner import Outcome

        outcome, resumed = Outcome(interrupted_by=e.signum), None
        runner = None
    # Elements whose hash/key position is missing fail without being sent to a worker.
    for position, element, err in counts.bad_elements if runner is not None else ():
        runner.fail_unsent(position, element, "IndexError", err)
    if counts.more_bad_elements:
        outcome.failed += counts.more_bad_elements
        reporter.message(f"... and {counts.more_bad_elements} more calls failed the same way (too few "
                         f"arguments for the --hash/--key position); not listed one by one.")
    status = ("interrupted" if outcome.interrupted_by else
              "aborted" if outcome.fatal or outcome.args_error else "complete")
    journal.close(outcome.done, outcome.failed, status)
    say = reporter.message
    if journal.broken is not None:
        lost = outcome.done - journal.written_calls
        outcome.done = journal.written_calls
        say(f"stopped: {journal.broken.err.strerror or journal.broken.err} while writing the journal "
            f"{journal_path}. {outcome.done} calls completed and are recorded there, {outcome.failed} failed"
            + (f"; {lost} more finished but could not be recorded and will run again" if lost > 0 else "")
            + f". Free some space (or fix the file system), then run '{again_cmd(ns, opts, spec, journal_path)}"
              f" --resume' to do the rest.")
        return EXIT_FAILED
    again = again_cmd(ns, opts, spec, journal_path)
    if resumed is not None and (not opts["quiet"] or resumed.skipped != journal.previous.recorded):
        say(f"--resume: skipped {resumed.skipped} calls the journal records as completed.")
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
            f"the rest did not run. '{again} --resume' skips the completed ones.")
        return 128 + outcome.interrupted_by
    if outcome.args_error:
        say(f"stopped early: {outcome.args_error} (see above). {outcome.done} calls completed, "
            f"{outcome.failed} failed. Fix the iterable and run again with --resume.")
        return EXIT_FAILED
    if outcome.failed:
        say(f"{outcome.failed} of {total} calls failed (see above; '{again} --failed' lists them).")
        return EXIT_FAILED
    if not opts["quiet"]:
        say(f"{outcome.done} calls done.")
    return EXIT_OK


def again_cmd(ns, opts, spec, journal_path):
    """The clum command that runs this again (for hints)."""
    return " ".join(shlex.quote(w) for w in ["clum", ns.script]
                    + (["--bins", str(spec)] if opts["bins"] else [])
                    + (["-x", bins.format_positions(opts["hash"])] if opts["hash"] is not None else [])
                    + (["-k", str(opts["key"])] if opts["key"] is not None else [])
                    + (["--journal", journal_path] if opts["journal"] else []))


def start_method(opts):
    """--start-method, else $CLUSTER_FUNC_START_METHOD, else fork where there is fork."""
    import multiprocessing

    method = opts.get("start_method") or os.environ.get("CLUSTER_FUNC_START_METHOD")
    if method:
        if method not in multiprocessing.get_all_start_methods():
            raise UserError(f"--start-method {method} is not available here; choose one of "
                            f"{', '.join(multiprocessing.get_all_start_methods())}.")
        return method
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def count_elements(args):
    """len() where it exists, else by iterating (nothing is kept)."""
    try:
        return len(args)
    except TypeError:
        n = 0
        for n, _ in enumerate(args, 1):
            pass
        return n


def replace_bins(argv, new_spec):
    """argv (before '--') with any -b/--bins/--bin replaced by ``--bins new_spec`` at the end."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("-b", "--bins", "--bin"):
            skip = True
            continue
        if a.startswith(("--bins=", "--bin=")) or (a.startswith("-b") and not a.startswith("--")):
            continue
        out.append(a)
    return out + ["--bins", new_spec]


MANAGE = ("--status", "--resubmit", "--cancel")


def run_cluf(argv):
    from . import jobs, schedulers

    argv_all = list(argv)
    argv, passthrough = split_passthrough(argv)
    if any(a in MANAGE for a in argv):
        from . import status

        ns = cluf_manage_parser().parse_args(argv)
        ns.jobs_dir = ns.jobs_dir or ns.jobs_dir_opt
        if ns.status:
            return status.status(ns.jobs_dir)
        if ns.resubmit:
            return status.resubmit(ns.jobs_dir, submit)
        return status.cancel(ns.jobs_dir)
    ns = cluf_parser().parse_args(argv)
    module, opts = load(ns, "cluf", passthrough)
    get_target(module, opts["target"])
    args = get_args(module, opts["args"])
    if ns.nodes is not None:
        opts["iterations"] = None  # the command line wins over cluf_options / ~/.clufrc
    elif ns.iterations is not None:
        opts["nodes"] = None
    if opts["nodes"] is not None and opts["iterations"] is not None:
        raise UserError("Give either -n/--nodes (how many jobs) or -i/--iterations (calls per job), "
                        "not both (check cluf_options and ~/.clufrc too).")
    if opts["nodes"] is None and opts["iterations"] is None:
        raise UserError("Say how to split the work: -n/--nodes N for N jobs, or -i/--iterations K for "
                        "about K calls per job. Example: cluf script.py -n 12")
    if opts["iterations"] is not None:
        count = count_elements(args)
        nodes = max(1, -(-count // opts["iterations"]))
        print(f"cluf: {count} calls, {opts['iterations']} per job: {nodes} job{'s' * (nodes != 1)}.")
    else:
        nodes = opts["nodes"]
    submitting = not opts["no_q"]
    sched = schedulers.get(opts["scheduler"], submitting)
    if submitting and not shutil.which(sched.submit_command):
        raise UserError(f"Cannot submit to {sched.name}: its command {sched.submit_command!r} is not on "
                        f"PATH. Run cluf where the scheduler is installed, or write the scripts "
                        f"without submitting them with -q/--no-q.")
    spec = opts["bins"]
    if spec is not None and spec.total != nodes:
        raise UserError(f"--bins {spec} names {spec.total} bins, but there are {nodes} jobs: with cluf, "
                        f"--bins x/N selects which of the N jobs to write and submit, so N must equal "
                        f"the number of nodes (e.g. -n {nodes} -b 0/{nodes}).")
    chosen = list(spec.bins) if spec is not None else list(range(nodes))

    clum_args = ["--target", opts["target"], "--args", opts["args"]]
    if opts["hash"] is not None:
        clum_args += ["--hash", bins.format_positions(opts["hash"])]
    if opts["key"] is not None:
        clum_args += ["--key", str(opts["key"])]
    if opts["processes"]:
        clum_args += ["--processes", str(opts["processes"])]
    if opts["retries"]:
        clum_args += ["--retries", str(opts["retries"])]
    if opts["timeout"]:
        clum_args += ["--timeout", f"{opts['timeout']:.15g}"]
    if opts["start_method"]:
        clum_args += ["--start-method", opts["start_method"]]
    raw = opts[f"{sched.name}_options"] or {}
    plan = jobs.RunPlan(
        script=opts["script"], nodes=nodes, jobs_dir=opts["jobs_dir"] or os.getcwd(),
        submit_dir=os.getcwd(), scheduler=sched, clum_args=clum_args, passthrough=opts["passthrough"],
        env=opts["env"] or {}, prepend=opts["prepend_script"] or [], append=opts["append_script"] or [],
        resources={"walltime": opts["walltime"], "memory": opts["memory"], "queue": opts["queue"],
                   "account": opts["account"], "cpus": opts["cpus"] or opts["processes"]},
        raw=raw)
    for other in ("pbs", "slurm", "sge"):
        if other != sched.name and opts[f"{other}_options"]:
            _warn("cluf")(f"--{other}-options are ignored: the jobs are for {sched.name}.")
    if submitting:
        from .status import live_bins

        busy = live_bins(plan.manifest_path(), chosen, sched)
        if busy:
            listed = ", ".join(f"bin {i} (job {j}, {st})" for i, j, st in busy[:10])
            raise UserError(
                f"{len(busy)} of these bins are already queued or running: {listed}"
                f"{', ...' if len(busy) > 10 else ''}. Submitting them again would run their calls twice. "
                f"Wait for them, cancel them first (cluf --cancel {plan.jobs_dir}), or choose the other "
                f"bins with -b.")
    mode = "hash" if opts["hash"] is not None else "key" if opts["key"] is not None else "round-robin"
    calls = {}
    for i in chosen:
        n = bins.expected_count(args, bins.BinSpec((i,), nodes), mode)
        if n is not None:
            calls[i] = n
    if opts["array"] and len(chosen) > 1:
        return submit_arrays(plan, chosen, submitting, opts["max_running"], calls, bool(opts["resume"]))
    if opts["max_running"]:
        _warn("cluf")("--max-running only applies with --array; ignored.")
    try:
        paths = jobs.write(plan, chosen, resume=bool(opts["resume"]))
    except OSError as e:
        raise UserError(f"Cannot write the job scripts in {plan.jobs_dir}: {e.strerror}.") from None
    if not submitting:
        print(f"cluf: wrote {len(paths)} {sched.name} job script{'s' * (len(paths) != 1)} in "
              f"{plan.jobs_dir} (not submitted: -q). Run one by hand with: bash {paths[0]}")
        return EXIT_OK
    return submit(plan, chosen, paths, argv_all, resume=bool(opts["resume"]), calls=calls)


def _contiguous_runs(items, limit):
    """Split sorted ints into runs of consecutive values, each at most ``limit`` long."""
    runs = []
    for i in items:
        if runs and i == runs[-1][0] + runs[-1][1] and runs[-1][1] < limit:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return runs


def submit_arrays(plan, chosen, submitting, max_running, calls, resume=False):
    from . import jobs

    sched = plan.scheduler
    say = _warn("cluf")
    if max_running and sched.max_running_note:
        say(f"--max-running is ignored: {sched.max_running_note}.")
        max_running = None
    limit = (sched.max_array_size() if submitting else None) or len(chosen)
    runs = _contiguous_runs(sorted(chosen), limit)
    if len(runs) > 1 and limit < len(chosen):
        print(f"cluf: {sched.name} allows at most {limit} tasks per array here: splitting the "
              f"{len(chosen)} bins into {len(runs)} arrays.")
        if max_running:
            share = max(1, max_running // len(runs))
            note = "" if share * len(runs) <= max_running else \
                f" (at least 1 each, so up to {share * len(runs)} may run at once)"
            (say if note else print)(f"--max-running {max_running} is shared out between the "
                                     f"{len(runs)} arrays: at most {share} running tasks per array{note}.")
            max_running = share
    try:
        paths = [jobs.write_array(plan, first, count, max_running, resume) for first, count in runs]
    except OSError as e:
        raise UserError(f"Cannot write the job scripts in {plan.jobs_dir}: {e.strerror}.") from None
    if not submitting:
        print(f"cluf: wrote {len(paths)} {sched.name} array job script{'s' * (len(paths) != 1)} in "
              f"{plan.jobs_dir} (not submitted: -q). Run one bin by hand with: "
              f"{jobs.ARRAY_BIN_VAR}={runs[0][0]} bash {paths[0]}")
        return EXIT_OK
    manifest_path = plan.manifest_path()
    manifest = jobs.load_manifest(manifest_path) or jobs.new_manifest(plan)
    jobs.plan_bins(manifest, chosen)
    for (first, count), path in zip(runs, paths):
        try:
            array_id = sched.submit(path, plan.submit_dir)
        except RuntimeError as e:
            jobs.save_manifest(manifest_path, manifest)
            rest = [i for f, c in runs[runs.index([first, count]):] for i in range(f, f + c)]
            raise SubmitError(
                f"submitting the array {path} failed: {e}. Arrays submitted before it are recorded in "
                f"{manifest_path}. Not submitted: bins {bins.format_positions(rest)} of {plan.nodes}; "
                f"to submit them (as single jobs) once the problem is fixed, run:\n    "
                f"cluf --resubmit {shlex.quote(plan.jobs_dir)}") from None
        for i in range(first, first + count):
            index = i - first + sched.array_first_index
            jobs.record(manifest, i, path, sched.task_id(array_id, index), array_id=array_id,
                        calls=calls.get(i))
        jobs.save_manifest(manifest_path, manifest)
        print(f"submitted {path} as job {array_id} (array of {count}: bins {first}-{first + count - 1})")
    return EXIT_OK


def submit(plan, chosen, paths, argv_all=None, resume=False, calls=None, manifest_path=None):
    from . import jobs

    manifest_path = manifest_path or plan.manifest_path()
    manifest = jobs.load_manifest(manifest_path) or jobs.new_manifest(plan)
    jobs.plan_bins(manifest, chosen)
    calls = calls or {}
    done = []
    for i, path in zip(chosen, paths):
        try:
            job_id = plan.scheduler.submit(path, plan.submit_dir)
        except RuntimeError as e:
            jobs.save_manifest(manifest_path, manifest)
            rest = chosen[len(done):]
            if argv_all is not None:
                cmd_argv, passthrough = split_passthrough(argv_all)
                cmd = ["cluf", *replace_bins(cmd_argv, f"{bins.format_positions(rest)}/{plan.nodes}")]
                if passthrough:
                    cmd += ["--", *passthrough]
            else:
                cmd = ["cluf", "--resubmit", plan.jobs_dir]
            submitted = ", ".join(f"bin {b} as job {j}" for b, j in done) or "none"
            raise SubmitError(
                f"submitting bin {i} failed: {e}.\n  submitted: {submitted}\n  not submitted: bins "
                f"{bins.format_positions(rest)} of {plan.nodes}\n  to submit the rest once the problem is "
                f"fixed, run:\n    {' '.join(shlex.quote(w) for w in cmd)}") from None
        jobs.record(manifest, i, path, job_id, resume, calls=calls.get(i))
        done.append((i, job_id))
        print(f"submitted {path} as job {job_id}")
        jobs.save_manifest(manifest_path, manifest)
    print(f"cluf: submitted {len(done)} job{'s' * (len(done) != 1)} to {plan.scheduler.name}; "
          f"manifest: {manifest_path}")
    return EXIT_OK


def print_failed(journal_path):
    from . import journal as journal_mod

    if not os.path.exists(journal_path):
        raise UserError(f"No journal at {journal_path}: this script and bin spec have not been run "
                        f"(or use --journal PATH to name the journal).")
    if os.path.isdir(journal_path):
        raise UserError(f"The journal path {journal_path} is a directory, not a journal. Name the journal "
                        f"file with --journal PATH.")
    try:
        st = journal_mod.read(journal_path)
    except OSError as e:
        raise UserError(f"Cannot read the journal {journal_path}: {e.strerror}.") from None
    if st.format is None:
        raise UserError(f"{journal_path} is not a clum journal or is unreadable (its first line is not a "
                        f"journal header), so it cannot say which calls failed. Name the run's journal "
                        f"with --journal PATH.")
    if st.bad:
        print(f"# skipped {st.bad} unreadable line(s) of the journal", file=sys.stderr)
    if st.last_status is None:
        print(f"# the last run did not finish ({st.last_done} calls completed)", file=sys.stderr)
    if not st.last_failed:
        print(f"# no failed calls in the last run ({st.last_done} completed)", file=sys.stderr)
        return EXIT_OK
    for rec in st.last_failed:
        print(f"position {rec.get('pos')}: args {rec.get('args')}: {rec.get('type')}: {rec.get('msg')}")
    return EXIT_FAILED


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def guarded(fn, prog, argv):
    # SIGINT and SIGTERM at any moment: an orderly stop (the runner has its own handling while
    # it runs; before and after, these turn into Interrupted).
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
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
    except BrokenPipeError:
        return EXIT_FAILED


def clum_main(argv=None):
    sys.exit(guarded(run_clum, "clum", sys.argv[1:] if argv is None else argv))


def cluf_main(argv=None):
    sys.exit(guarded(run_cluf, "cluf", sys.argv[1:] if argv is None else argv))
