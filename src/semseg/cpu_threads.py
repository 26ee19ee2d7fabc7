"""How many threads MXNet's CPU math runs on: one per physical core this process may use.

MXNet reads ``OMP_NUM_THREADS`` once, when it is imported, and its convolutions (oneDNN, built on
OpenMP) run on that many threads. Left unset, MXNet 1.9.1 on Intel x86 takes *half* of the
processors (``src/engine/openmp.cc`` assumes every core shows two hyperthreads). That is right on
a host with hyperthreading and wrong on one without it: many virtual machines report one thread
per core, and there MXNet leaves half of the cores idle. ``bench/train_speed.py`` measures what
the idle cores give a training step (figures in docs/performance.md).

So ``train`` and ``serve`` set ``OMP_NUM_THREADS`` themselves, before MXNet is imported, from the
machine's topology rather than from MXNet's assumption: the number of distinct physical cores
among the CPUs this process may run on (``sched_getaffinity``, which honours ``docker --cpuset``
and ``taskset``), divided among the processes that share them. A value the user set is kept, if
it is a whole number: MXNet aborts on anything else, so it is refused first, in one sentence.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

VARIABLE = "OMP_NUM_THREADS"
TOPOLOGY = Path("/sys/devices/system/cpu")


def usable_cpus() -> set[int]:
    """The CPUs this process may run on: its affinity, which ``docker --cpuset`` and ``taskset`` set
    (``os.cpu_count()`` counts the whole machine's)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def usable_cpu_count() -> int:
    """How many CPUs this process may run on: the one count every part of the program uses."""
    return len(usable_cpus())


def physical_cores(cpus: set[int], topology: Path = TOPOLOGY) -> int:
    """Distinct (package, core) pairs among ``cpus``; the count of ``cpus`` where sysfs does not say."""
    cores = set()
    for cpu in cpus:
        folder = topology / f"cpu{cpu}" / "topology"
        try:
            cores.add(((folder / "physical_package_id").read_text().strip(), (folder / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores)


def math_threads(processes: int = 1) -> int:
    """This process's share of the physical cores when ``processes`` processes compute side by side."""
    return max(1, physical_cores(usable_cpus()) // max(1, processes))


def check_user_value() -> None:
    """Refuse a value MXNet would abort on (it parses the variable as an integer when imported)."""
    value = os.environ.get(VARIABLE)
    if value is not None and not (value.strip().isdigit() and int(value) >= 1):
        raise UserError(f"{VARIABLE} must be a whole number of threads of at least 1, not {value!r}")


def set_math_threads(processes: int = 1) -> str:
    """Set ``OMP_NUM_THREADS`` (unless it is set already) before MXNet is imported; returns its value."""
    check_user_value()
    return os.environ.setdefault(VARIABLE, str(math_threads(processes)))
