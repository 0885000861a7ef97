"""Load the user's script by path and find its target, arguments and options."""

from __future__ import annotations

import collections.abc
import contextlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from importlib.machinery import ModuleSpec
from types import CodeType, FrameType, ModuleType
from typing import Any, Callable, Iterable, Iterator, Mapping, NoReturn, Sequence

from .errors import Interrupted, ScriptError

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # cluster_func/: our frames

MODULE_NAME = "__cluster_func_target__"


def resolve_path(path: str) -> str:
    """Absolute path of the script; ``example`` finds ``example.py`` too."""
    candidates = [path]
    if not path.endswith(".py"):
        candidates.append(path + ".py")
    for c in candidates:
        if os.path.isfile(c):
            if not os.access(c, os.R_OK):
                raise ScriptError(f"The script {os.path.abspath(c)} cannot be read (permission denied).")
            return os.path.abspath(c)
    if os.path.isdir(path):
        raise ScriptError(f"{path!r} is a directory, not a Python script. Give the path of a .py file.")
    if os.path.islink(path) and not os.path.exists(path):
        raise ScriptError(f"{path!r} is a symbolic link to {os.readlink(path)!r}, which does not exist. Give the "
                          f"path of the Python file that defines your target function and its args.")
    if os.path.exists(path):
        raise ScriptError(f"{path!r} is not a regular file (a device, a FIFO or a socket), so not a Python "
                          f"script. Give the path of a .py file.")
    tried = " or ".join(repr(c) for c in candidates)
    raise ScriptError(
        f"No such script: {tried} does not exist (looked in {os.getcwd()}). "
        f"Give the path of the Python file that defines your target function and its args."
    )


class _SourceOnly(importlib.machinery.SourceFileLoader):
    """The script compiled from its source every time, never from a cached .pyc: a script edited
    within the same second to the same size (``i*3`` to ``i*5``) would otherwise run its old code
    from __pycache__, and no __pycache__ is written beside the user's script."""

    def get_code(self, fullname: str) -> CodeType:
        return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)


def load_script(path: str, argv: Iterable[str] = ()) -> ModuleType:
    """Import the script at ``path`` as a module not named ``__main__``.

    The script's folder goes first on ``sys.path`` so its own imports work, and
    ``sys.argv`` is ``[path, *argv]`` while it runs (and stays so afterwards,
    since a target may read it at call time).
    """
    if os.environ.pop(_UNSET_SAFE_PATH, None):  # set for the forkserver only: not the script's business
        os.environ.pop("PYTHONSAFEPATH", None)
    path = resolve_path(path)
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    _shield_standard_library(folder)
    sys.argv = [path, *argv]
    # An explicit loader: importlib finds none for a name without the .py suffix.
    loader = _SourceOnly(MODULE_NAME, path)
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path, loader=loader)
    assert spec is not None and spec.loader is not None  # (a loader was given)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    real_exit, loader_pid = os._exit, os.getpid()

    def exit_while_loading(status: int) -> NoReturn:  # os._exit at the top level: say so instead of vanishing
        if os.getpid() != loader_pid:  # a process the script forked: exit for real
            real_exit(status)
        raise _ExitWhileLoading(status)
    os._exit = exit_while_loading
    try:
        spec.loader.exec_module(module)
    except _ExitWhileLoading as e:
        raise ScriptError(
            f"The script {path} called os._exit({e.status!r}) while being loaded, which ends the process at once "
            f"with exit status {e.status!r}, before anything can run. Put code that should only run as "
            f"a program under `if __name__ == '__main__':`.") from None
    except SystemExit as e:
        raise ScriptError(
            f"The script {path} called sys.exit({e.code!r}) while being loaded. Put code that should "
            f"only run as a program under `if __name__ == '__main__':`."
        ) from None
    except BaseException as e:  # noqa: BLE001 - we report the script's own error
        if isinstance(e, (KeyboardInterrupt, Interrupted)):
            raise
        tb = traceback.TracebackException.from_exception(e)
        # Keep only the frames from the user's script and below: drop our loader.
        frames = [f for f in tb.stack
                  if not f.filename.startswith((PACKAGE_DIR, "<frozen"))]
        tb.stack = traceback.StackSummary.from_list(frames)
        detail = "".join(tb.format()).rstrip()
        not_python = _not_python(path, e)
        if not_python:
            raise ScriptError(f"The script {path} is {not_python}; clum and cluf run a "
                              f"Python file that defines the target function and its args. Python "
                              f"could not read it:\n{detail}") from None
        shadows = shadowing_note(path)
        raise ScriptError(f"The script {path} failed while being imported:\n{detail}"
                          + (f"\n{shadows}" if shadows else "")) from None
    finally:
        os._exit = real_exit
    return module


class _ExitWhileLoading(BaseException):
    """os._exit called by the script's top level while clum loads it."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _StandardLibraryFirst:
    """A finder (first on ``sys.meta_path``) for top-level imports that the script's own code
    does not make: a name the standard library has is found there, never in the script's folder.

    The script's folder is first on ``sys.path`` so that the script imports its siblings; a
    ``random.py`` or ``tempfile.py`` there must not replace the standard module that clum (or
    multiprocessing, or a library the script uses) imports later.  Imports made by code in the
    script's folder keep Python's own rule (the sibling first)."""

    def __init__(self) -> None:
        self.folders: set[str] = set()
        self.stdlib: list[str] = []  # the standard library's folders (set on install: no import in find_spec)

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
                  ) -> ModuleSpec | None:
        if path is not None or not self.folders:
            return None
        frame: FrameType | None = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen"):  # importlib's own
            frame = frame.f_back
        importer = frame.f_globals.get("__file__") if frame is not None else None
        if importer and os.path.dirname(os.path.abspath(importer)) in self.folders:
            return None  # the script's (or a sibling's) own import
        return importlib.machinery.PathFinder.find_spec(name, self.stdlib, target)


_SHIELD = _StandardLibraryFirst()


def _stdlib_dirs() -> list[str]:
    import sysconfig

    paths = sysconfig.get_paths()
    dirs = [paths["stdlib"], paths["platstdlib"]]
    return list(dict.fromkeys([*dirs, *(os.path.join(d, "lib-dynload") for d in dirs)]))


def _shield_standard_library(folder: str) -> None:
    """Install :class:`_StandardLibraryFirst` for ``folder`` when it holds a module named as one of
    the standard library's (one listdir; nothing is installed otherwise)."""
    try:
        names = {os.path.splitext(n)[0] for n in os.listdir(folder) if n.endswith(".py") or
                 os.path.isdir(os.path.join(folder, n))}
    except OSError:
        return
    shadowed = _standard_names(names)
    if not shadowed:
        return
    _SHIELD.stdlib = _SHIELD.stdlib or _stdlib_dirs()
    _SHIELD.folders.add(folder)
    if _SHIELD not in sys.meta_path:
        sys.meta_path.insert(0, _SHIELD)
    _import_standard_first(shadowed)


# Standard modules whose import does something visible (a browser, a print, a window): never imported early.
_VISIBLE_ON_IMPORT = frozenset({"antigravity", "this", "__hello__", "__phello__", "idlelib", "tkinter",
                                "turtle", "turtledemo"})


def _import_standard_first(names: set[str]) -> None:
    """Import the standard module of each name in ``names`` (standard library names), before
    the script runs: then the script, clum and multiprocessing all get the standard one, whatever
    was imported before (a fresh interpreter has imported little; ``tempfile``, which
    multiprocessing imports late, itself needs ``random``).  The shield is installed, so these
    imports are found in the standard library; one that fails is left to fail where it is used."""
    for name in sorted(names - _VISIBLE_ON_IMPORT):
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - e.g. a module this platform lacks: the script's import says so
            pass


def _standard_names(names: Iterable[str]) -> set[str]:
    """Those of ``names`` that name a module of the standard library (``sys.stdlib_module_names``;
    on Python 3.9, which lacks it, those found in the standard library's own folders)."""
    listed = getattr(sys, "stdlib_module_names", None)
    if listed is not None:
        return {n for n in names if n in listed}
    folders = _SHIELD.stdlib or _stdlib_dirs()
    return {n for n in names if n.isidentifier() and (n in sys.builtin_module_names or
                                                      importlib.machinery.PathFinder.find_spec(n, folders))}


def shadowing_note(path: str) -> str:
    """A sentence naming each module beside the script ``path`` that has the name of a standard
    library module the script imports, or "" (one listdir and one read of the script; none for a
    folder without such a name).  clum has imported the standard module already (it uses it
    itself), so the script gets that one, where ``python script.py`` would get the file beside it."""
    import re

    folder = os.path.dirname(path)
    try:
        entries = os.listdir(folder)
    except OSError:
        return ""
    candidates: dict[str, str] = {}
    for n in entries:
        name = n[:-3] if n.endswith(".py") else n if os.path.isdir(os.path.join(folder, n)) else None
        if name is not None and name not in candidates:
            candidates[name] = os.path.join(folder, n)
    found = {name: candidates[name] for name in _standard_names(candidates)}
    if not found:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            source = f.read()
    except OSError:
        return ""
    imported = [name for name in sorted(found)
                if re.search(rf"^\s*(?:import|from)\s+{re.escape(name)}\b", source, re.M)]
    if not imported:
        return ""
    files = ", ".join(found[n] for n in imported)
    names = ", ".join(imported)
    return (f"{files} beside the script ha{'ve' if len(imported) > 1 else 's'} the name of a standard library "
            f"module that the script imports ({names}): cluster-func itself uses the standard one, so the "
            f"script gets the standard {imported[0]}, not the file beside it (plain `python` would give the "
            f"file). Rename {os.path.basename(found[imported[0]])} (e.g. to my_{imported[0]}.py) and import it "
            f"by its new name.")


_UNSET_SAFE_PATH = "CLUSTER_FUNC_UNSET_PYTHONSAFEPATH"


@contextlib.contextmanager
def without_script_folders() -> Iterator[None]:
    """The script folders that :func:`_shield_standard_library` guards are off ``sys.path`` for
    the block: a spawned or forkserver worker starts with the parent's ``sys.path`` and imports
    multiprocessing's modules before it loads the script (which shields it again).  The forkserver
    process starts as ``python -c``, which puts the current directory first: PYTHONSAFEPATH (Python
    3.11+) keeps it off, and the worker removes the variable again before loading the script."""
    folders = _SHIELD.folders
    saved = list(sys.path) if folders else None
    set_safe_path = bool(folders) and "PYTHONSAFEPATH" not in os.environ
    if folders:
        sys.path[:] = [p for p in sys.path if p not in folders]
    if set_safe_path:
        os.environ.update({"PYTHONSAFEPATH": "1", _UNSET_SAFE_PATH: "1"})
    try:
        yield
    finally:
        if saved is not None:
            sys.path[:] = saved
        if set_safe_path:
            os.environ.pop("PYTHONSAFEPATH", None)
            os.environ.pop(_UNSET_SAFE_PATH, None)


def _not_python(path: str, error: BaseException) -> str | None:
    """What the file at ``path`` is, when not Python source (for a message), or None when it is, or might
    be, Python that failed to import: a first line '#!' naming another interpreter, or an error
    compiling the file itself, says it is not."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    first = head.split(b"\n", 1)[0]
    if first.startswith(b"#!") and b"python" not in first:  # a shell script may even import (`ls`)
        return f"not Python (a script for {first[2:].decode(errors='replace').strip()})"
    if not isinstance(error, (SyntaxError, ValueError, UnicodeDecodeError)):
        return None
    if isinstance(error, SyntaxError) and error.filename not in (None, path):
        return None  # a syntax error in a module the script imports
    if b"\0" in head or isinstance(error, UnicodeDecodeError):
        return "not Python (a binary file)"
    if not path.endswith(".py"):
        return "not Python, or not valid Python (it does not compile)"
    return None  # a .py file with a syntax error: the script's own mistake


def get_target(module: ModuleType, name: str) -> Callable[..., Any]:
    path = getattr(module, "__file__", "the script")
    if not hasattr(module, name):
        callables = sorted(
            k for k, v in vars(module).items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == MODULE_NAME
        )
        hint = f" Functions it defines: {', '.join(callables)}." if callables else ""
        raise ScriptError(
            f"The script {path} has no target {name!r}. Define a function called {name!r} or name "
            f"yours with --target NAME.{hint}"
        )
    target = getattr(module, name)
    if not callable(target):
        raise ScriptError(
            f"The target {name!r} in {path} is not callable (it is a {type(target).__name__}). "
            f"--target must name a function."
        )
    problem = target_problem(target, name)
    if problem:
        raise ScriptError(f"The target {name!r} in {path} {problem}")
    return target


def target_problem(target: Any, name: str = "target") -> str | None:
    """Why calling ``target`` would not run its body (a generator function, an ``async def``),
    as the end of a sentence "The target ... ", or None.  One rule for clum, cluf and map: such a
    call only makes a generator or a coroutine, which nothing would run, and would count as done."""
    import inspect

    fn = target if inspect.isroutine(target) or hasattr(target, "func") else getattr(target, "__call__", target)
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        return (f"is a generator function (it uses yield): calling it only makes a generator, so its body "
                f"would never run and each call would count as done with nothing done. Return the values "
                f"instead, e.g. a list: replace the yields with `return [...]`, or call it through a plain "
                f"function: def {name}_list(*a): return list({name}(*a)).")
    if inspect.iscoroutinefunction(fn):
        return (f"is an async def function: calling it only makes a coroutine, which nothing awaits, so its "
                f"body would never run and each call would count as done with nothing done. Give a plain "
                f"function that runs it, defined at the top level of a module: "
                f"def run_{name}(*a): return asyncio.run({name}(*a)).")
    return None


def get_init_worker(module: ModuleType) -> Callable[[], Any] | None:
    """The script's ``init_worker()``, called once in each worker before its first call, or None."""
    init = getattr(module, "init_worker", None)
    if init is not None and not callable(init):
        raise ScriptError(f"init_worker in {module.__file__} must be a function (clum calls it once in each "
                          f"worker before its first call), not a {type(init).__name__}.")
    return init


def get_args(module: ModuleType, name: str) -> Any:
    """The arguments iterable; a zero-argument callable is called to get it."""
    path = getattr(module, "__file__", "the script")
    if not hasattr(module, name):
        raise ScriptError(
            f"The script {path} has no args {name!r}. Define an iterable (list, generator, ...) "
            f"called {name!r}, or name yours with --args NAME."
        )
    args = getattr(module, name)
    if callable(args) and not hasattr(args, "__iter__"):
        try:
            args = args()
        except (Exception, SystemExit) as e:  # noqa: BLE001 - the script's own error
            raise ScriptError(f"Calling {name}() in {path} to get the arguments failed; its traceback:\n"
                              f"{user_traceback(e)}") from None
    problem = args_problem(args, name)
    if problem:
        raise ScriptError(f"The args {name!r} in {path} {problem}")
    try:
        iter(args)
    except TypeError:
        raise ScriptError(
            f"The args {name!r} in {path} is not iterable (it is a {type(args).__name__}). It must be "
            f"an iterable of arguments, e.g. a list or a generator, or a function that returns one."
        ) from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - its __iter__ failed
        raise ScriptError(f"iter() of the args {name!r} in {path} failed; its traceback:\n"
                          f"{user_traceback(e)}") from None
    return args


def args_problem(args: Any, name: str = "args") -> str | None:
    """Why ``args`` cannot be the arguments iterable although it iterates, as the end of a sentence
    "The args ... ", or None: one rule for clum, cluf and map.  A string would give one call per
    character; a dict only its keys; and a set (or a dict's view) has no order of its own that every
    process shares (a set of strings is ordered differently in each Python process), while bins,
    --resume and the values' positions all count on the order of args."""
    abc = collections.abc
    if isinstance(args, (str, bytes, bytearray)):
        return (f"is a string (a {type(args).__name__}), so the target would be called once per character. Give a "
                f"list or another iterable of arguments, e.g. [{name}] for one call.")
    if isinstance(args, abc.Mapping):
        return (f"is a {type(args).__name__}: iterating it gives only its keys, which is rarely what is meant, "
                f"and its order is how it was filled, so clum, cluf and map do not guess. Say which, in a "
                f"fixed order: sorted({name}.items()) calls target(key, value), [{name}[k] for k in "
                f"sorted({name})] calls target(value), sorted({name}) calls target(key).")
    if isinstance(args, abc.MappingView):
        return (f"is a dict view (keys(), values() or items()): its order is how the dict was filled, which "
                f"clum, cluf and map do not count on. Give a list in a fixed order: sorted({name}).")
    if isinstance(args, abc.Set):
        return (f"is a {type(args).__name__}, which has no fixed order: a set of strings is ordered differently in each "
                f"Python process, so bins would split it differently in each job (some calls running twice, "
                f"others never) and positions, --resume and the values would not match. Give a list in a "
                f"fixed order: sorted({name}).")
    return None


def user_traceback(error: BaseException) -> str:
    """The traceback of an exception raised by the script's code, from its first frame outside
    cluster-func (our frames that called it are left out)."""
    tb = error.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(PACKAGE_DIR + os.sep):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb)).rstrip()


def args_error_where(position: int | None) -> str:
    """Where the arguments iterable raised, for a message: '... raised ValueError {where}'."""
    if position is None:
        return "while producing an element"
    if position == 0:
        return "before its first element (while producing the element at position 0)"
    return f"while producing the element at position {position}, after {position} element{'s' * (position != 1)}"


def get_options(module: ModuleType, name: str) -> dict:
    opts = getattr(module, name, None)
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise ScriptError(f"{name} in {module.__file__} must be a dict, not a {type(opts).__name__}.")
    return dict(opts)


def check_positions(first: Any, opts: Mapping[str, Any]) -> None:
    """Refuse a --hash/--key position or keyword that ``first``, the first element of args, does
    not have (every call would fail), naming the element; and a --key whose argument there is
    not a bin number."""
    from .arguments import Arguments
    from .bins import argument, format_positions, missing_argument

    positions = opts["hash"] if opts["hash"] is not None else \
        (opts["key"],) if opts["key"] is not None else ()
    if not positions:
        return
    flag = "--hash" if opts["hash"] is not None else "--key"
    a = as_args(first)
    if any(isinstance(p, str) for p in positions):
        try:
            for p in positions:
                argument(a, p)
        except (IndexError, KeyError):
            raise ScriptError(
                f"{flag} {format_positions(positions)}: the first element of {opts['args']!r}, "
                f"{short_repr(first)}, cannot be binned: {missing_argument(a, opts['hash'], opts['key'])}. "
                f"Name keyword arguments that every element, a cluster_func.Arguments, has; positions "
                f"count from 0.") from None
    else:
        n = len(a.args if a.__class__ is Arguments else a)
        if max(positions) >= n:
            has = "no arguments" if n == 0 else f"{n} argument{'s' * (n != 1)} (positions 0 to {n - 1})"
            raise ScriptError(
                f"{flag} {format_positions(positions)}: the first element of {opts['args']!r}, "
                f"{short_repr(first)}, has {has}, so position {max(positions)} does not exist. Positions "
                f"count from 0; an element that is not a tuple is one argument.")
    if opts["key"] is not None:
        import operator

        value = argument(a, opts["key"])
        try:
            ok = not isinstance(value, bool) and operator.index(value) is not None
        except TypeError:
            ok = False
        if not ok:
            raise ScriptError(
                f"--key {opts['key']}: the first element of {opts['args']!r}, {short_repr(first)}, has "
                f"{short_repr(value, 40)} at {opts['key']!r}, which is not a bin number: with --key that "
                f"argument is the bin, an integer from 0 to the number of bins - 1, so no bin would run "
                f"it. Make that argument the bin number, or bin by a hash of it with --hash {opts['key']}.")


def peek_first(args: Iterable[Any]) -> tuple[tuple[Any] | None, Iterable[Any]]:
    """(the first element of args or None when there is none, an iterable of all of args again):
    for checks before a run; an iterable that raises gives its exception back to whoever iterates."""
    import itertools

    it = iter(args)
    try:
        first = next(it)
    except StopIteration:
        return None, ()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the runner reports it where it happened
        error = e

        def again() -> Iterator[Any]:
            yield from ()
            raise error
        return None, again()
    return (first,), itertools.chain((first,), it)


def pickling_hint(element: Any) -> str:
    """How to make an element of args that cannot be pickled into one that can (a sentence)."""
    import io
    import types

    parts = as_args(element)
    if parts.__class__ is not tuple:  # an Arguments: its keyword values too
        parts = parts.args + tuple(parts.kwargs.values())
    for a in parts:
        if isinstance(a, types.FunctionType) and ("<lambda>" in a.__qualname__ or "<locals>" in a.__qualname__):
            return ("Each element of args is pickled to reach a worker, and a lambda or a function defined "
                    "inside another cannot be: define it with def at the top level of the script (module level) "
                    "and pass that.")
        if isinstance(a, io.IOBase):
            return ("Each element of args is pickled to reach a worker, and an open file cannot be: pass the "
                    "file's path instead and open it in target.")
        if isinstance(a, types.GeneratorType):
            return ("Each element of args is pickled to reach a worker, and a generator cannot be: pass a list, "
                    "or what the generator is made from.")
    return ("Each element of args is pickled to reach a worker: pass plain data (numbers, strings, tuples, lists, "
            "dicts), objects of classes defined at the top level of a module, or a path or name that target turns "
            "into the object.")


def as_args(element: Any) -> Any:
    """A tuple element is the positional arguments, an :class:`cluster_func.Arguments` is kept
    as it is; anything else is the single argument."""
    from .arguments import Arguments

    return element if isinstance(element, tuple) or element.__class__ is Arguments else (element,)


def short_repr(obj: object, limit: int = 120) -> str:
    try:
        r = repr(obj)
    except Exception as e:  # noqa: BLE001
        r = f"<unrepresentable {type(obj).__name__}: {e}>"
    return r if len(r) <= limit else r[: limit - 3] + "..."


def split_passthrough(argv: Iterable[str]) -> tuple[list[str], list[str]]:
    """A command line split at its first ``--``: (the command's own words, the script's
    ``sys.argv[1:]``)."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []
