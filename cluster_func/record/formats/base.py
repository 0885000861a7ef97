"""What a results format is: one class, registered under its name (see the package's docstring).

A format turns ``(position, value)`` into the bytes of one record of its results file, and back.
The workers encode (a batch of values at once: :meth:`ResultsFormat.encode_batch`); the main process
only moves those bytes (into the journal and the export) and, on a resume or an ownership check,
splits them into records again.  A record's bytes are made once, in the worker: the export holds
exactly the bytes the journal holds.
"""

from typing import Any, BinaryIO, Callable, Dict, Iterator, Optional, Sequence, Tuple, Type

REGISTRY: Dict[str, "ResultsFormat"] = {}  # name -> the format (an instance of its class)


class ValueNotWritable(TypeError):
    """The value a call returned cannot be written in the results file's format: that call
    fails with this message (and no traceback from inside the tool)."""

    no_traceback = True


Report = Callable[[int, BaseException], None]  # (index in the batch, why its value cannot be written)


class ResultsFormat:
    """A results file format.  Subclasses set ``name`` (the format, also the name of its module)
    and ``extension`` and implement the methods that raise NotImplementedError."""

    name = ""
    extension = ""
    unframed_after_torn = False  # a torn record hides the rest of the file (the message says so)

    # --- in the worker ---
    def encode(self, pos: int, value: Any) -> bytes:
        """The bytes of one record; :class:`ValueNotWritable` when the value cannot be written."""
        raise NotImplementedError

    def encode_batch(self, positions: Sequence[int], values: Sequence[Any], skip: Sequence[int] = (),
                     report: Optional[Report] = None) -> bytes:
        """The records of a batch's values (``values[k]`` at ``positions[k]``), the indices in
        ``skip`` (calls that failed) left out.  A value that cannot be written is left out too,
        and ``report(k, error)`` says so (its call fails).  This one encodes value by value; a
        format may do better for the usual batches (all ints, say)."""
        gone = set(skip)
        out = []
        for k, (pos, value) in enumerate(zip(positions, values)):
            if k in gone:
                continue
            try:
                out.append(self.encode(pos, value))
            except Exception as e:  # noqa: BLE001 - that call fails; the others keep their values
                if report is None:
                    raise
                report(k, e)
        return b"".join(out)

    # --- in the main process ---
    def split(self, data: bytes) -> Iterator[Tuple[int, bytes]]:
        """``(position, record bytes)`` of each record of whole records (as a worker made them)."""
        raise NotImplementedError

    def moved(self, record: bytes, pos: int) -> bytes:
        """A record's bytes, with its position replaced by ``pos``."""
        raise NotImplementedError

    def decode(self, data: bytes) -> Iterator[Tuple[int, Any]]:
        """``(position, value)`` of each record of whole records (as a worker made them)."""
        raise NotImplementedError

    def read(self, f: BinaryIO) -> Iterator[Optional[Tuple[int, Any]]]:
        """``(position, value)`` of each record of an open results file, whatever wrote it; None
        for a record that cannot be read (torn, or not a record), after which the rest is read on
        when the format frames its records (``unframed_after_torn`` false)."""
        raise NotImplementedError

    def records_of_file(self, data: bytes) -> Iterator[Optional[Tuple[Any, bytes]]]:
        """``(position, record bytes)`` of each record of a results file's bytes that has a
        position (whatever its type); None for one that cannot be read (torn), after which the
        rest is read on when the format frames its records (``unframed_after_torn`` false)."""
        raise NotImplementedError


def register(cls: Type[ResultsFormat]) -> Type[ResultsFormat]:
    """The class decorator that makes a format known by its name."""
    REGISTRY[cls.name] = cls()
    return cls
