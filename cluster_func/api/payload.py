"""A run submitted from Python, as files a cluf job can run: the payload, its script, its identity.

``cluster_func.submit(target, args, ...)`` writes three files into the jobs dir, each whole (a
temporary file renamed over it) and never through a symbolic link, and then submits the script
with cluf's own machinery, so that the jobs are cluf's jobs (job scripts runnable by hand,
manifest, journals, continuation, requeue):

``<name>.payload``
    ``cluster_func payload 1\\n``, then the BLAKE2b-128 hex digest of the rest and ``\\n``, then
    the cloudpickle of ``{"target": target, "args": [every element], "init_worker": function or None,
    "sources": {"files": {file: [lines]}, "code": {"name:first line": file}}}``.  cloudpickle sends by
    value what cannot be imported by name (a function of ``__main__`` or a notebook, a closure, a
    lambda) and by reference what can.  A payload whose digest does not match is refused with a
    message naming it (a torn or edited file), never half-loaded.  cloudpickle names the code it
    sends by value ``<dynamic-code>``; ``sources`` gives it back its file and the lines the caller
    had for it (a notebook's cells, the script of ``__main__``), so that a failed call's
    traceback shows the file, line and source line where it failed.
``<name>.py``
    the script every job's clum runs: it puts the submitting process's ``sys.path`` first (so
    that the notebook's own modules import) and loads ``target``, ``args`` and ``init_worker`` (clum's,
    called once in each worker) from the payload.
``<name>.run.json``
    the run's identity: ``{"cluster_func_run": 1, "name", "script", "nodes", "count", "target":
    {"name", "digest"}, "args": {"digest"}, "created", "python"}``.  A second ``submit``/``map``
    into the same jobs dir compares its target's and args' digests with these: the same run is
    attached to (no recorded call runs again), a different one is refused, saying what differs.

The target's digest is taken from what the function does, not from where it was defined, so that a
notebook cell run again after a kernel restart is the same target: an importable function by its
module and name; otherwise its name, code (bytecode, constants, names, recursively), defaults and
closure values.  Globals it reads are not part of it (a changed global constant is not seen).
"""

import hashlib
import json
import linecache
import os
import pickle
import re
import sys
import time
import types
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..core.files import replaced

MAGIC = b"cluster_func payload 1\n"
RUN_FORMAT = 1
PAYLOAD_SUFFIX, SCRIPT_SUFFIX, RUN_SUFFIX = ".payload", ".py", ".run.json"


class PayloadError(Exception):
    """A payload or run file that cannot be read as one (the message names it and says why)."""


def _cloudpickle() -> Any:
    try:
        import cloudpickle
    except ImportError:  # (a dependency of cluster-func: only a broken install lacks it)
        raise ImportError("cluster_func.submit needs cloudpickle to send the target to the jobs: "
                          "pip install cloudpickle") from None
    return cloudpickle


# --- names and digests ----------------------------------------------------------------------

def run_name(target: Any) -> str:
    """A file name for the run, from the target's name (``lambda`` for a lambda)."""
    name = getattr(target, "__name__", None) or type(target).__name__
    name = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "target"
    return name if name[0].isalpha() else "t_" + name


def _importable(fn: Any) -> bool:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return False
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj is fn


def _feed_code(h: Any, code: types.CodeType) -> None:
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_argcount, code.co_kwonlyargcount)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(h, const)
        else:
            h.update(repr(const).encode())


def _feed_value(h: Any, value: Any, depth: int) -> None:
    if depth > 20:
        h.update(b"...")
    elif callable(value) and not isinstance(value, type):
        _feed_target(h, value, depth + 1)
    else:
        try:
            h.update(pickle.dumps(value, 4))
        except Exception:  # noqa: BLE001 - anything cloudpickle can send
            try:
                h.update(_cloudpickle().dumps(value))
            except Exception:  # noqa: BLE001
                h.update(repr(value).encode())


def _feed_target(h: Any, fn: Any, depth: int = 0) -> None:
    if _importable(fn):
        h.update(f"ref:{fn.__module__}:{fn.__qualname__}".encode())
        return
    if isinstance(fn, types.MethodType):
        _feed_target(h, fn.__func__, depth + 1)
        _feed_value(h, fn.__self__, depth + 1)
        return
    if hasattr(fn, "func") and hasattr(fn, "args") and hasattr(fn, "keywords"):  # functools.partial
        _feed_target(h, fn.func, depth + 1)
        _feed_value(h, (fn.args, sorted(fn.keywords.items())), depth + 1)
        return
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object: what it holds
        _feed_value(h, fn, depth + 1)
        return
    h.update(f"fn:{getattr(fn, '__qualname__', '')}".encode())
    _feed_code(h, code)
    _feed_value(h, (fn.__defaults__, sorted((fn.__kwdefaults__ or {}).items())), depth + 1)
    for cell in fn.__closure__ or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            contents = None
        _feed_value(h, contents, depth + 1)


def target_digest(fn: Any) -> str:
    """What the target does, as a digest (see the module docstring)."""
    h = hashlib.blake2b(digest_size=16)
    _feed_target(h, fn)
    return h.hexdigest()


def args_digest(args: List[Any]) -> str:
    h = hashlib.blake2b(digest_size=16)
    try:
        h.update(pickle.dumps(args, 4))
    except Exception:  # noqa: BLE001 - elements only cloudpickle can send
        h.update(_cloudpickle().dumps(args))
    return h.hexdigest()


# --- writing and reading ----------------------------------------------------------------------

def _write_whole(path: str, data: bytes) -> None:
    """Write ``path`` whole (core.files.replaced); a link or a non-file there is not ours to replace."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        raise PayloadError(f"{path} is a symbolic link or not a regular file, so cluster_func will not write "
                           f"it. Move it away, or give another jobs_dir.")
    with replaced(path, "wb", sync=True) as f:
        f.write(data)


DYNAMIC_CODE = "<dynamic-code>"  # cloudpickle's co_filename for the code it sends by value


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _codes(c)


def _by_value(fns: List[Any]) -> List[types.FunctionType]:
    """The functions among ``fns`` that cloudpickle sends by value, with those they reach by
    their globals' names and closures (the helpers of a notebook or of ``__main__``)."""
    todo = [f for f in fns if isinstance(f, types.FunctionType)]
    seen: set = set()
    out = []
    while todo:
        fn = todo.pop()
        if id(fn) in seen or _importable(fn):
            continue
        seen.add(id(fn))
        out.append(fn)
        names = {n for code in _codes(fn.__code__) for n in code.co_names}
        todo += [g for n in names if isinstance(g := fn.__globals__.get(n), types.FunctionType)]
        for cell in fn.__closure__ or ():
            try:
                if isinstance(cell.cell_contents, types.FunctionType):
                    todo.append(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
    return out


def sources_of(fns: List[Any]) -> Dict[str, Dict[str, Any]]:
    """The source lines the caller has for the code sent by value, and which file each code is of."""
    files: Dict[str, List[str]] = {}
    where: Dict[str, str] = {}
    for fn in _by_value(fns):
        for code in _codes(fn.__code__):
            lines = files.get(code.co_filename) or linecache.getlines(code.co_filename, fn.__globals__)
            if lines:
                files[code.co_filename] = lines
                where[f"{code.co_name}:{code.co_firstlineno}"] = code.co_filename
    return {"files": files, "code": where}


def _renamed(code: types.CodeType, where: Dict[str, str]) -> types.CodeType:
    consts = tuple(_renamed(c, where) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    name = where.get(f"{code.co_name}:{code.co_firstlineno}") if code.co_filename == DYNAMIC_CODE else None
    return code.replace(co_filename=name or code.co_filename, co_consts=consts)


def restore_sources(fns: List[Any], sources: Any) -> None:
    """Give the code sent by value its file back, and the lines to show in a traceback."""
    if not isinstance(sources, dict):
        return
    files, where = sources.get("files") or {}, sources.get("code") or {}
    for name, lines in files.items():  # the lines as submitted, even where the file has changed since
        linecache.cache[name] = (sum(map(len, lines)), None, list(lines), name)  # (no mtime: kept)
    for fn in _by_value(fns):
        try:
            fn.__code__ = _renamed(fn.__code__, where)
        except (ValueError, TypeError):  # nothing is lost but the names in a traceback
            pass


def write_payload(path: str, target: Any, args: List[Any], init_worker: Optional[Any] = None) -> None:
    try:
        body = _cloudpickle().dumps({"target": target, "args": args, "init_worker": init_worker,
                                     "sources": sources_of([target, init_worker])}, protocol=4)
    except Exception as e:  # noqa: BLE001 - what cannot be sent, said
        raise TypeError(f"cluster_func.submit: the target and args cannot be sent to the jobs: cloudpickle "
                        f"could not pickle them ({type(e).__name__}: {e}). Give a target and arguments that "
                        f"can be pickled (no open files, locks or sockets among them).") from None
    digest = hashlib.blake2b(body, digest_size=16).hexdigest().encode()
    _write_whole(path, MAGIC + digest + b"\n" + body)


def read_payload(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PayloadError(f"Cannot read the payload {path} ({e.strerror or e}): it holds the target and args "
                           f"of a run submitted from Python. Submit the run again.") from None
    head, _, rest = data[len(MAGIC):].partition(b"\n")
    if not data.startswith(MAGIC) or hashlib.blake2b(rest, digest_size=16).hexdigest().encode() != head:
        raise PayloadError(f"{path} is not a whole payload of cluster_func (torn, truncated or edited: its digest "
                           f"does not match), so its target and args cannot be trusted. Submit the run again "
                           f"into a new jobs_dir.")
    payload = _cloudpickle().loads(rest)
    return payload if isinstance(payload, dict) else {}


def load(script_path: str) -> Tuple[Any, List[Any], Any]:
    """``target, args, init_worker`` for the script at ``script_path`` (called by the script itself)."""
    payload = read_payload(script_path[: -len(SCRIPT_SUFFIX)] + PAYLOAD_SUFFIX)
    restore_sources([payload["target"], payload.get("init_worker")], payload.get("sources"))
    return payload["target"], payload["args"], payload.get("init_worker")


def caller_path() -> List[str]:
    """The submitting process's ``sys.path``, as absolute folders that exist ('' is its cwd)."""
    out = []
    for p in sys.path:
        p = os.path.abspath(p or os.getcwd())
        if os.path.isdir(p) and p not in out:
            out.append(p)
    return out


def write_script(path: str, target: Any, count: int) -> None:
    text = (f"# Written by cluster_func.submit on {time.strftime('%Y-%m-%d %H:%M:%S')}: {getattr(target, '__qualname__', 'the target')} "
            f"over {count} arguments.\n"
            f"# clum and cluf run it as any script. Its target and args come from the payload beside it, and the\n"
            f"# submitting process's sys.path comes first, so that its own modules import.\n"
            f"import sys as _sys\n\n"
            f"_sys.path[:0] = [_p for _p in {caller_path()!r} if _p not in _sys.path]\n\n"
            f"from cluster_func.api.payload import load as _load  # noqa: E402\n\n"
            f"target, args, init_worker = _load(__file__)\n")
    _write_whole(path, text.encode())


def create_identity(path: str, identity: Dict[str, Any]) -> bool:
    """Write the run file only if there is none (a temporary file linked to its name, which fails
    when the name exists): True when this process made it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write((json.dumps(identity, indent=1) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def read_identity(path: str) -> Dict[str, Any]:
    """The run file at ``path``, checked field by field."""
    try:
        if os.path.islink(path):
            raise OSError(0, "a symbolic link")
        with open(path, encoding="utf-8") as f:
            ident = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        why = getattr(e, "strerror", None) or str(e)
        raise PayloadError(f"{path} cannot be read as the record of a run submitted from Python ({why}). "
                           f"Move it away and submit the run again, or give the jobs_dir of another run.") from None
    ok = (isinstance(ident, dict) and ident.get("cluster_func_run") == RUN_FORMAT
          and all(isinstance(ident.get(k), str) for k in ("name", "script"))
          and all(type(ident.get(k)) is int and ident[k] >= 0 for k in ("nodes", "count"))
          and isinstance(ident.get("target"), dict) and isinstance(ident["target"].get("digest"), str)
          and isinstance(ident.get("args"), dict) and isinstance(ident["args"].get("digest"), str))
    if not ok:
        raise PayloadError(f"{path} is not a record of a run submitted from Python by this cluster_func (a field is "
                           f"missing or of the wrong type). Move it away and submit the run again.")
    return ident


def identity(name: str, script: str, nodes: int, target: Any, args: List[Any],
             tdigest: Optional[str] = None, adigest: Optional[str] = None) -> Dict[str, Any]:
    return {"cluster_func_run": RUN_FORMAT, "name": name, "script": script, "nodes": nodes, "count": len(args),
            "target": {"name": getattr(target, "__qualname__", repr(target))[:200],
                       "digest": tdigest or target_digest(target)},
            "args": {"digest": adigest or args_digest(args)},
            "created": time.time(), "python": sys.executable}
