"""A pytest plugin for firmware tests, named "tinyvmm" (its pytest11 entry point), so installing
tinyvmm is all it takes and `pytest -p no:tinyvmm` turns it off. docs/api.md describes it.

The `machine` fixture makes Machines and closes them after the test; it skips the test,
with the reason, where /dev/kvm cannot run a guest. A failing test's report gets, for each
Machine it made, the last run's outcome, its crash report and the consoles' last lines.
"""

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:       # pytest loads this plugin in every session: tinyvmm only when used
    from tinyvmm.machine import Machine

_MACHINES: "pytest.StashKey[list[Machine]]" = pytest.StashKey()


@pytest.fixture
def machine(request):
    """machine(firmware=None, **options) -> tinyvmm.Machine: takes what Machine() takes;
    each Machine is closed when the test ends."""
    from tinyvmm.kvm.system import kvm_status
    from tinyvmm.machine import Machine
    reason = kvm_status()
    if reason:
        pytest.skip(f"needs /dev/kvm: {reason}")
    made = request.node.stash.setdefault(_MACHINES, [])

    def make(firmware=None, **options) -> Machine:
        made.append(Machine(firmware, **options))
        return made[-1]
    yield make
    for each in made:
        each.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for number, made in enumerate(item.stash.get(_MACHINES, []), 1):
            report.sections.append((f"tinyvmm machine {number}", made.summary()))
