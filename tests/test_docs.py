"""The docs are tested like code.

- Every relative link in README.md and docs/*.md points to a file that exists (and, if it names
  an anchor, to a heading that exists): a page that moves or is missing fails here.
- Every ``clum``/``cluf`` command line in their shell code blocks (```bash blocks, and ``$ ``
  lines of untyped blocks, which show a terminal session) runs here, in a temporary directory that
  holds a copy of examples/ and stand-ins for the scripts the docs only show, unless it is listed in
  NEEDS_A_CLUSTER with the reason. So a new command in the docs either runs or is listed on purpose.
  The listed ones are still checked: every option they use is one their command's --help lists.
- README's second set-up command is the one .ci/run runs, byte for byte.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

# Commands the docs show that cannot run on a machine without a cluster, as the docs write them
# (comments dropped, words joined by one space), with the reason.
NEEDS_A_CLUSTER = {
    "cluf examples/process_files.py --nodes 12": "submits 12 jobs to a batch scheduler",
    "cluf sweep.py -n 3 -p 1 -j jobs": "the Slurm walkthrough: submits 3 jobs",
    "cluf --status jobs": "asks the scheduler about the jobs of a submitted run",
    "cluf --resubmit jobs": "submits the walkthrough's failed bin again",
    "cluf sweep.py -n 2 -p 1 -j jobs --walltime 00:01:00 --wait":
        "submits to Slurm and waits for jobs that continue past a one-minute walltime",
    "cluf stuck.py -n 1 -p 1 -j stuck-jobs --walltime 00:01:00 --wait":
        "submits to Slurm; stuck.py (one call longer than the walltime) is only described",
    "cluf --status stuck-jobs": "asks the scheduler about the run above",
}

# Stand-ins for scripts the docs use but only show (or only name). sweep.py is the docs' own
# sweep.py code block, with the training function it leaves out.
STAND_INS = {
    "example.py": "def target(x):\n    return x * x\n\nargs = range(30)\n",
}
SWEEP_PREFIX = "def train_and_score(lr, depth):\n    return lr * depth\n\n"

SHELL_LANGS = {"bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", ";", "|"}


def rel(path):
    return path.relative_to(ROOT).as_posix()


# --- reading the pages ------------------------------------------------------------------------

def fenced_blocks(text):
    """(language, [(line number, line)], first line number) of every fenced code block."""
    blocks, lang, body, start = [], None, [], 0
    for number, line in enumerate(text.split("\n"), 1):
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", line)
        if fence and lang is None:
            lang, body, start = fence.group(2).lower(), [], number
        elif fence and lang is not None and not fence.group(2):
            blocks.append((lang, body, start))
            lang = None
        elif lang is not None:
            body.append((number, line))
    return blocks


def prose_lines(text):
    """(line number, line) outside fenced code blocks, with inline code spans removed."""
    inside = set()
    for _, body, start in fenced_blocks(text):
        inside.update(range(start, start + len(body) + 2))
    return [(n, re.sub(r"`[^`]*`", "", line)) for n, line in enumerate(text.split("\n"), 1)
            if n not in inside]


def slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path):
    return {slug(line.lstrip("#")) for _, line in prose_lines(path.read_text()) if re.match(r"^#{1,6} ", line)}


def relative_links():
    found = []
    for page in PAGES:
        for number, line in prose_lines(page.read_text()):
            for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
                    found.append((page, number, target))
    return found


def shell_lines(text):
    """(line number, command line) of the shell code blocks: ```bash blocks whole (continuation
    lines joined), and the '$ ' lines of untyped blocks."""
    out = []
    for lang, body, _ in fenced_blocks(text):
        if lang in SHELL_LANGS:
            pending, first = "", None
            for number, line in body:
                if line.rstrip().endswith("\\"):
                    pending, first = pending + line.rstrip()[:-1] + " ", first or number
                    continue
                out.append((first or number, pending + line))
                pending, first = "", None
        elif lang == "":
            out.extend((number, line[2:]) for number, line in body if line.startswith("$ "))
    return out


def commands(page):
    """(line number, argv) of every clum/cluf command in the page's shell code blocks."""
    found = []
    for number, line in shell_lines(page.read_text()):
        words = shlex.split(line.strip().removeprefix("$ "), comments=True)
        segment = []
        for word in [*words, ";"]:
            if word not in SEPARATORS:
                segment.append(word)
                continue
            while segment and re.match(r"^[A-Za-z_]\w*=", segment[0]):  # VAR=value before a command
                segment.pop(0)
            if segment and segment[0] in ("clum", "cluf"):
                found.append((number, segment))
            segment = []
    return found


def spelled(argv):
    return " ".join(argv)


def all_commands():
    return [(page, number, argv) for page in PAGES for number, argv in commands(page)]


def needs_a_cluster(argv):
    """Why a command not listed in NEEDS_A_CLUSTER would still reach a scheduler, or None."""
    if argv[0] != "cluf" or {"-h", "--help", "--version"} & set(argv):
        return None
    if {"--status", "--resubmit", "--cancel", "--wait"} & set(argv):
        return "it asks a scheduler about submitted jobs"
    if {"-q", "--no-q", "-no-q", "--gather"} & set(argv):
        return None
    return "it submits jobs (add -q to only write them)"


# --- links ------------------------------------------------------------------------------------

LINKS = relative_links()


@pytest.mark.parametrize("page, number, target", LINKS,
                         ids=[f"{rel(p)}:{n}->{t}" for p, n, t in LINKS])
def test_every_relative_link_points_to_a_file_that_exists(page, number, target):
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{rel(page)} line {number} links to {target}, and {dest} does not exist"
    if anchor:
        assert dest.suffix == ".md" and anchor in anchors(dest), \
            f"{rel(page)} line {number} links to {target}: {rel(dest)} has no heading with anchor #{anchor}"


def test_the_docs_have_links_and_the_front_page_links_every_docs_page():
    assert len(LINKS) > 10, "the link check found almost no links: is its pattern still right?"
    linked = {(p.parent / t.partition("#")[0]).resolve() for p, _, t in LINKS if p.name == "README.md"}
    unlinked = [rel(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link these docs pages: {unlinked}"


# --- the set-up commands ----------------------------------------------------------------------

def test_the_readmes_second_set_up_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up: two commands", 1)[1]
    lang, body, _ = fenced_blocks(setup)[0]
    lines = [line for _, line in body if line.strip() and not line.startswith("#")]
    assert lang == "bash" and len(lines) == 2, f"the set-up block should hold two commands: {lines}"
    ci = (ROOT / ".ci" / "run").read_text().split("\n")
    assert lines[1] in ci, f"README's second command {lines[1]!r} is not a line of .ci/run"


# --- commands ---------------------------------------------------------------------------------

def environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLUF_", "CLUM_TEST"))}
    env["CLUFRC"] = os.devnull
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def sweep_script():
    for page in PAGES:
        for lang, body, _ in fenced_blocks(page.read_text()):
            if lang == "python" and body and body[0][1].strip() == "# sweep.py":
                return SWEEP_PREFIX + "\n".join(line for _, line in body) + "\n"
    raise AssertionError("no docs page shows sweep.py any more: update STAND_INS in tests/test_docs.py")


def workdir(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("input", "output", "__pycache__", ".cluster_func"))
    for name, text in {**STAND_INS, "sweep.py": sweep_script()}.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def run(argv, cwd, env):
    exe = BIN / argv[0]
    return subprocess.run([str(exe if exe.exists() else argv[0]), *argv[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_every_command_of_the_docs_is_found_and_every_listed_one_is_still_there():
    shown = {spelled(argv) for _, _, argv in all_commands()}
    assert len(shown) > 10, f"the command reader found almost nothing: {shown}"
    stale = sorted(set(NEEDS_A_CLUSTER) - shown)
    assert not stale, f"NEEDS_A_CLUSTER lists commands no page shows any more: {stale}"


RUNNABLE = {page: [(n, argv) for n, argv in commands(page) if spelled(argv) not in NEEDS_A_CLUSTER]
            for page in PAGES}
PAGES_WITH_COMMANDS = [page for page in PAGES if RUNNABLE[page]]


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=[rel(p) for p in PAGES_WITH_COMMANDS])
def test_every_command_a_page_shows_runs_or_is_listed_as_needing_a_cluster(page, tmp_path):
    cmds = RUNNABLE[page]
    cwd, env = workdir(tmp_path), environment(tmp_path)
    problems = []
    for number, argv in cmds:  # in the page's order: a --resume follows the run it resumes
        where = f"{rel(page)} line {number}: {spelled(argv)}"
        why = needs_a_cluster(argv)
        if why:
            problems.append(f"{where}\n  cannot run here: {why}; list it in NEEDS_A_CLUSTER with the reason")
            continue
        r = run(argv, cwd, env)
        if r.returncode != 0:
            problems.append(f"{where}\n  exit {r.returncode}\n  stdout: {r.stdout[-1500:]}\n  stderr: {r.stderr[-1500:]}")
    assert not problems, "\n".join(problems)


def options_in_help(command, env, cwd):
    r = run([command, "--help"], cwd, env)
    assert r.returncode == 0, r.stderr
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", r.stdout))


def test_the_commands_that_need_a_cluster_use_only_options_their_help_lists(tmp_path):
    env = environment(tmp_path)
    known = {name: options_in_help(name, env, tmp_path) for name in ("clum", "cluf")}
    wrong = []
    for page, number, argv in all_commands():
        if spelled(argv) not in NEEDS_A_CLUSTER:
            continue
        for word in argv[1:]:
            if word == "--":
                break
            if word.startswith("-") and len(word) > 1 and not re.match(r"^-\d", word):
                if word.split("=", 1)[0] not in known[argv[0]]:
                    wrong.append(f"{rel(page)} line {number}: {spelled(argv)}: {argv[0]} has no option {word}")
    assert not wrong, "\n".join(wrong)


# --- sample job scripts ---------------------------------------------------------------------------

SAMPLE = re.compile(r"<!-- sample job script(?P<header>, header)?: (?P<command>cluf [^>]*?) -->\n```bash\n(?P<body>.*?)```",
                    re.S)
DOC_DIR, DOC_PYTHON, DOC_MARK = "/home/me/work", "/home/me/.venv/bin/python", "0123456789abcdef"


def _rendered(command, tmp_path):
    """The job script of bin 0 that ``command`` (a cluf -q command line) writes, with the paths, the
    Python and the submission mark of the docs."""
    from cluster_func import __version__

    words = shlex.split(command)[1:]
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / words[0]).write_text("def target(x):\n    pass\nargs = range(9)\n")
    env = {**os.environ, "CLUFRC": os.devnull, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", "from cluster_func.cli import cluf_main; cluf_main()", *words],
                       cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    [path] = work.glob(f"{Path(words[0]).stem}-0-*.{words[words.index('--scheduler') + 1]}")
    text = path.read_text().replace(str(work), DOC_DIR).replace(sys.executable, DOC_PYTHON)
    text = re.sub(r"cluf_submission=[0-9a-f]+", f"cluf_submission={DOC_MARK}", text)
    return text.replace(f"cluster-func {__version__}", "cluster-func 0.1.0")


def test_every_sample_job_script_in_the_docs_is_the_real_rendered_output(tmp_path):
    """Every ```bash block of the docs that is a job script carries the cluf command that writes it,
    and is that command's real job script (or its header, up to the first blank line).
    CLUF_UPDATE_DOCS=1 rewrites them."""
    stale = []
    for page in PAGES:
        text = page.read_text()
        blocks = len(re.findall(r"```bash\n#!/bin/bash\n#(?:PBS|SBATCH|\$|BSUB) ", text))
        samples = list(SAMPLE.finditer(text))
        assert blocks == len(samples), f"{page.name}: a sample job script without its <!-- sample job script --> line"
        new = text
        for m in reversed(samples):
            want = _rendered(m["command"], tmp_path)
            if m["header"]:
                want = want.split("\n\n", 1)[0] + "\n"
            if m["body"] != want:
                stale.append(f"{page.name}: {m['command']}")
                new = new[:m.start("body")] + want + new[m.end("body"):]
        if new != text and os.environ.get("CLUF_UPDATE_DOCS"):
            page.write_text(new)
    assert not stale, f"sample job scripts that differ from the real output (CLUF_UPDATE_DOCS=1 rewrites): {stale}"


def test_the_api_page_names_no_values_file_that_map_does_not_write():
    assert ".values.pkl" not in (ROOT / "docs" / "api.md").read_text()


def test_the_results_page_warns_that_reading_a_pkl_runs_code_from_it():
    assert "runs code from it" in (ROOT / "docs" / "results.md").read_text()


def test_the_clum_page_says_clum_skips_the_keys_only_cluf_takes_as_clum_does(tmp_path):
    assert "skipped by clum" in (ROOT / "docs" / "clum.md").read_text()
    (tmp_path / "s.py").write_text("clum_options = {'nodes': 3, 'scheduler': 'slurm'}\ndef target(x):\n    pass\n"
                                   "args = [1]\n")
    r = subprocess.run([sys.executable, "-m", "cluster_func", "s.py"], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.returncode == 0, r.stderr


def test_clufs_help_gives_results_one_meaning_and_its_usage_names_wait():
    r = subprocess.run([sys.executable, "-c", "from cluster_func.cli import cluf_main; cluf_main()", "--help"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    results = r.stdout[r.stdout.index("--results"):].split("\n  -", 1)[0]
    assert "--results FORMAT" in results and "PATH" not in results and ".jsonl" not in results, results
    assert "--wait |" in r.stdout.split("\n\n")[0], r.stdout.split("\n\n")[0]
