"""The journal and the live export of a run that collects values start the disk writes of what
they wrote as they go (record/writer.py, WriteBehind), so that the fsync at the end finds it on its
way instead of waiting for all of it."""

import os

from cluster_func.record import writer


def test_each_range_written_is_handed_to_the_disk_once_a_few_mib_have_been_written(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: calls.append((off, n, advice)), raising=False)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        behind = writer.WriteBehind(fd, start=100)
        behind.wrote(writer.KICK_BYTES - 1)
        assert calls == []  # not yet
        behind.wrote(1)
        behind.wrote(writer.KICK_BYTES + 5)
        assert calls == [(100, writer.KICK_BYTES, os.POSIX_FADV_DONTNEED),
                         (100 + writer.KICK_BYTES, writer.KICK_BYTES + 5, os.POSIX_FADV_DONTNEED)]
    finally:
        os.close(fd)


def test_where_the_call_fails_or_is_missing_nothing_changes(tmp_path, monkeypatch):
    def refuse(*a):
        raise OSError(22, "not here")

    monkeypatch.setattr(os, "posix_fadvise", refuse, raising=False)
    behind = writer.WriteBehind(5)
    behind.wrote(3 * writer.KICK_BYTES)
    monkeypatch.delattr(os, "posix_fadvise", raising=False)
    behind.wrote(3 * writer.KICK_BYTES)
    assert behind.kicked == behind.written == 6 * writer.KICK_BYTES
