"""Real-scheduler scenarios that run in threads, all started when the test session starts.

A scenario is a function ``(adapter, tmp) -> SimpleNamespace`` in a test module's
``SCENARIOS`` dict: it drives one run through the real ``cluf`` and a real scheduler and
returns what it saw; the tests that check it are marked ``@scenario("name")`` and
parametrized by ``sched``.  Most of a scenario's time is spent waiting for the scheduler
(walltimes are minutes in Slurm's words), so the session starts every selected scenario on
every scheduler that is up at once, in a thread each, before its first test runs
(``scenario_runs`` in tests/conftest.py): they wait side by side, and while the rest of the
suite runs.  A test then waits for its own scenario with ``runs.get(name, sched)``, which
returns what the scenario returned or raises what it raised.  At the end of the session
whatever a module's scenarios left in a queue is cancelled after its last test.
"""

import threading
import time

import continuation_support as cont
import real_schedulers
import scheduler_support as ss

USABLE = {"slurm": ss.slurm_status, "sge": ss.sge_status, "pbs": ss.pbs_status}
WAIT = 900  # seconds a test waits for its scenario to end


def scenario(name):
    """Marks a test as checking scenario ``name`` of its module's SCENARIOS."""
    def mark(test):
        test.scenario = name
        return test
    return mark


def selected(items):
    """(module, scenario name, scheduler name) of each selected test that checks a scenario."""
    wanted = {}
    for item in items:
        name = getattr(getattr(item, "function", None), "scenario", None)
        callspec = getattr(item, "callspec", None)
        module = getattr(item, "module", None)
        if name and callspec and module is not None and "sched" in callspec.params:
            wanted[module.__name__, name, callspec.params["sched"]] = module
    return [(module, name, sched) for (_, name, sched), module in sorted(wanted.items())]


class Scenarios:
    """The session's scenarios, keyed by (module name, scenario name, scheduler name)."""

    def __init__(self, tmp_path_factory):
        self.factory = tmp_path_factory
        self.threads, self.results, self.folders = {}, {}, {}

    def start_selected(self, items):
        usable = {}
        for module, name, sched_name in selected(items):
            if sched_name not in usable:
                usable[sched_name] = USABLE[sched_name]()[0]
            if usable[sched_name]:
                self.start(module, name, sched_name)

    def start(self, module, name, sched_name):
        key = (module.__name__, name, sched_name)
        if key in self.threads:
            return
        adapter = real_schedulers.ADAPTERS[sched_name]
        tmp = self.folders[key] = self.factory.mktemp(f"{name}-{sched_name}")

        def body():
            started = time.monotonic()
            try:
                result = module.SCENARIOS[name](adapter, tmp)
                result.took = time.monotonic() - started
                self.results[key] = ("ok", result)
            except BaseException as e:  # noqa: BLE001 - re-raised in the test
                self.results[key] = ("error", e)

        thread = self.threads[key] = threading.Thread(target=body, daemon=True, name=f"{name}[{sched_name}]")
        thread.start()

    def get(self, module, name, sched):
        key = (module.__name__, name, sched.name)
        if key not in self.threads:  # not selected when the session started (e.g. run by hand): start it now
            self.start(module, name, sched.name)
        self.threads[key].join(timeout=WAIT)
        assert not self.threads[key].is_alive(), f"scenario {name} on {sched.name} still running after {WAIT} s"
        kind, value = self.results[key]
        if kind == "error":
            raise value
        print(f"scenario {name} on {sched.name}: {value.took:.0f} s")  # shown with -rA or -s
        return value

    def of(self, module):
        """What a module's tests use: ``runs.get(name, sched)``."""
        return _ModuleRuns(self, module)

    def stop(self, module=None):
        """Cancel what the scenarios (of ``module``, or all) left queued or running."""
        keys = [k for k in self.folders if module is None or k[0] == module.__name__]
        for key in keys:
            adapter = real_schedulers.ADAPTERS[key[2]]
            tmp = self.folders.pop(key)
            cont.stop_run(adapter, tmp, adapter.env(tmp))
        for key in keys:
            self.threads[key].join(timeout=120)


class _ModuleRuns:
    def __init__(self, scenarios, module):
        self.scenarios, self.module = scenarios, module

    def get(self, name, sched):
        return self.scenarios.get(self.module, name, sched)
