"""The thread count ``train`` and ``serve`` give MXNet: one per physical core, not MXNet's half of the CPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from semseg import cpu_threads
from semseg.errors import UserError


def fake_topology(root: Path, cores_of_cpus: dict[int, tuple[int, int]]) -> Path:
    """A /sys/devices/system/cpu tree where CPU n sits on (package, core) ``cores_of_cpus[n]``."""
    for cpu, (package, core) in cores_of_cpus.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return root


def test_one_thread_per_core_counts_every_cpu(tmp_path):
    topology = fake_topology(tmp_path, {0: (0, 0), 1: (0, 1)})
    assert cpu_threads.physical_cores({0, 1}, topology) == 2


def test_hyperthreads_of_one_core_count_once(tmp_path):
    topology = fake_topology(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1), 4: (1, 0), 5: (1, 0)})
    assert cpu_threads.physical_cores({0, 1, 2, 3, 4, 5}, topology) == 3
    assert cpu_threads.physical_cores({0, 2}, topology) == 1  # a cpuset of two siblings


def test_without_topology_every_usable_cpu_counts(tmp_path):
    assert cpu_threads.physical_cores({0, 1, 2}, tmp_path / "missing") == 3


def test_processes_share_the_cores_and_each_gets_at_least_one(monkeypatch):
    monkeypatch.setattr(cpu_threads, "physical_cores", lambda cpus, topology=cpu_threads.TOPOLOGY: 4)
    assert cpu_threads.math_threads() == 4
    assert cpu_threads.math_threads(2) == 2
    assert cpu_threads.math_threads(8) == 1


def test_a_value_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv(cpu_threads.VARIABLE, "3")
    assert cpu_threads.set_math_threads() == "3"


def test_unset_it_becomes_this_machines_core_count(monkeypatch):
    monkeypatch.delenv(cpu_threads.VARIABLE, raising=False)
    expected = str(cpu_threads.math_threads())
    assert cpu_threads.set_math_threads() == expected
    assert cpu_threads.os.environ[cpu_threads.VARIABLE] == expected


@pytest.mark.parametrize("value", ["abc", "0", "4,2", ""])
def test_a_value_mxnet_would_abort_on_is_one_sentence(monkeypatch, value):
    monkeypatch.setenv(cpu_threads.VARIABLE, value)
    with pytest.raises(UserError, match="OMP_NUM_THREADS must be a whole number of threads of at least 1"):
        cpu_threads.set_math_threads()
