"""A new user's sweep of bad and odd inputs, generated from the option table and the file formats,
run through the real clum and cluf; each outcome is counted as clear (exit 1 or 2, one 'error:'
paragraph, no traceback from inside the tool), accepted (exit 0), or internal (exit 70 or a frame
from inside cluster_func).

    PYTHONPATH=. python benchmarks/bad_input_sweep.py [--jobs 2] [--limit N]

tests/cli/test_bad_input_sweep.py runs one input of each family."""

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster_func import options  # noqa: E402

OK = "def target(x):\n    return x\nargs = range(6)\n"
VALUES = ["", "abc", "-1", "0", "1e999", "1e-9", "99999999999999999999", "nan", "inf", "1.5", "🙂", "x" * 5000,
          "0,0", "-", "--", "all", "1/0", "3,", "2T"]
SCRIPTS = {
    "set args": "def target(x):\n    pass\nargs = {'a', 'b'}\n",
    "frozenset args": "def target(x):\n    pass\nargs = frozenset([1, 2])\n",
    "dict args": "def target(x):\n    pass\nargs = {1: 2}\n",
    "dict values args": "def target(x):\n    pass\nargs = {1: 2}.values()\n",
    "string args": "def target(x):\n    pass\nargs = 'abc'\n",
    "generator target": "def target(x):\n    yield x\nargs = [1]\n",
    "async target": "async def target(x):\n    pass\nargs = [1]\n",
    "unpicklable keyword": "import threading\nfrom cluster_func import Arguments\ndef target(x, l=None):\n    pass\n"
                           "args = [Arguments(1), Arguments(2, l=threading.Lock())]\n",
    "nested map": "import cluster_func\ndef target(x):\n    cluster_func.map(str, [x], quiet=True)\nargs = [1]\n",
    "args not iterable": "def target(x):\n    pass\nargs = 3\n",
    "target not callable": "target = 3\nargs = [1]\n",
    "syntax error": "def target(x)\n",
}
DEEP = "[" * 100_000 + "]" * 100_000 + "\n"
JOURNALS = {"nested line": DEEP, "binary": "\xff\xfe\x00garbage\n", "format 99": '{"cluster_func_journal": 99}\n',
            "empty": "", "not json": "hello\n"}
CLUF = [sys.executable, "-c", "from cluster_func.cli import cluf_main; cluf_main()"]
CLUM = [sys.executable, "-m", "cluster_func"]


def inputs():
    """(family, name, command, argv, script source, files) for every input."""
    for o in options.OPTIONS:
        if o.flag:
            continue
        for command in o.commands.split():
            flag = f"--{o.name}"
            for v in VALUES:
                extra = ["-n", "2", "-q"] if command == "cluf" and o.name not in ("nodes", "iterations") else []
                if command == "cluf" and o.name in ("nodes", "iterations"):
                    extra = ["-q"]
                yield (f"{command} {flag}", f"{command} {flag} {v[:20]!r}", command, [*extra, flag, v], OK, {})
    for name, source in SCRIPTS.items():
        yield ("script", f"clum: {name}", "clum", [], source, {})
        yield ("script", f"cluf: {name}", "cluf", ["-n", "2", "-q"], source, {})
    for name, text in JOURNALS.items():
        for extra in (["--resume"], ["--failed"]):
            yield ("journal", f"journal {name} {extra[0]}", "clum", ["--journal", "j.journal", *extra], OK,
                   {"j.journal": text})
        yield ("manifest", f"manifest {name}", "cluf", ["--status", "."], None, {"s-2.manifest.json": text})
        yield ("defaults file", f"CLUFRC {name}", "cluf", ["-n", "2", "-q"], OK, {"rc.json": text})
    for var in ("0,0", "0,-1,2", "abc,,", "-1"):
        yield ("gpu environment", f"CUDA_VISIBLE_DEVICES={var}", "clum", ["--gpus", "all"], OK,
               {"env:CUDA_VISIBLE_DEVICES": var})


TOOL_FRAME = re.compile(r'File "[^"]*cluster_func[/\\]')


def classify(rc, err):
    if rc == 70 or TOOL_FRAME.search(err) or "internal error" in err:
        return "internal"
    if rc == 0:
        return "accepted"
    if rc in (1, 2) and "error:" in err or rc == 1 and "failed" in err:
        return "clear"
    return "unclear"


def run_one(item, root=ROOT):
    family, name, command, argv, source, files = item
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "PYTHONPATH": str(root), "CLUFRC": os.devnull}
        env.pop("CUDA_VISIBLE_DEVICES", None)
        if source is not None:
            Path(d, "s.py").write_text(source)
        for fname, text in files.items():
            if fname.startswith("env:"):
                env[fname[4:]] = text
            else:
                Path(d, fname).write_text(text, errors="surrogateescape")
                if fname == "rc.json":
                    env["CLUFRC"] = str(Path(d, fname))
        words = [*(["s.py"] if source is not None else []), *argv]
        try:
            r = subprocess.run([*(CLUM if command == "clum" else CLUF), *words], cwd=d, env=env,
                               capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                               errors="replace")
        except subprocess.TimeoutExpired:
            return family, name, "unclear", "timed out"
        return family, name, classify(r.returncode, r.stderr), r.stderr[-300:]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--limit", type=int)
    p.add_argument("--root", default=str(ROOT), help="the checkout to sweep (PYTHONPATH of the commands)")
    p.add_argument("--show", default="internal,unclear")
    a = p.parse_args()
    items = list(inputs())[:a.limit]
    counts = {}
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        for family, name, outcome, err in pool.map(lambda i: run_one(i, a.root), items):
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome in a.show.split(","):
                print(f"{outcome}: {name}: {err.strip().splitlines()[-1] if err.strip() else ''}")
    print(f"{len(items)} inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
