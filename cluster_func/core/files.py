"""Files written whole or not at all: job scripts, manifests, new journals, gathered results."""

from __future__ import annotations

import contextlib
import os
from typing import IO, Any, Iterator


@contextlib.contextmanager
def replaced(path: str, mode: str = "w", perms: int | None = None, sync: bool = False) -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file beside it, renamed over it only when the block
    ends without an exception (a reader never sees half a file; a failure leaves the old one).
    ``sync``: the data reaches the disk before the rename (the file survives a power loss)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):  # (a stale one, or a link someone put there: never written through)
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:  # type: ignore[call-overload]
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        if perms is not None:
            os.chmod(tmp, perms)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
