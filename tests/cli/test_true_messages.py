"""Messages that say what is true: the file named is the one at fault, the version named is the
one that wrote it (issue 29)."""

import subprocess


def test_a_journal_of_an_unknown_later_format_is_not_called_earlier(clum, clean_error):
    clum.script("s.py", "def target(x):\n    pass\nargs = range(3)\n")
    assert clum.run("s.py", "--journal", "s.journal").returncode == 0
    path = clum.dir / "s.journal"
    path.write_text(path.read_text().replace('"cluster_func_journal":2', '"cluster_func_journal":99', 1))
    err = clean_error(clum.run("s.py", "--journal", "s.journal", "--resume"), "format 99", "later")
    assert "earlier" not in err, err


def test_a_results_path_on_a_read_only_file_system_is_called_the_results_file(clum, clean_error):
    clum.script("s.py", "def target(x):\n    return x\nargs = range(3)\n")
    ro = clum.dir / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)], capture_output=True).returncode:
        import pytest

        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        err = clean_error(clum.run("s.py", "--results", "ro/values.jsonl"), "results file", "Read-only",
                          "--results PATH")
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)
    assert "the journal" not in err and "--journal" not in err, err
