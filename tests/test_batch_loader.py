"""The batch loader: order, errors, and loader processes that always end, whatever they are doing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from semseg.data.batch_loader import BatchLoader, LoaderProcessFailed
from semseg.errors import UserError
from semseg.train.stop import Stopped


class Numbers:
    """Item ``k``: an image filled with ``k`` and labels filled with ``-k``; some keys misbehave."""

    def __getitem__(self, key):
        if key == "user-error":
            raise UserError("The image seven.jpg could not be decoded")
        if key == "bug":
            raise KeyError("no such thing")
        if key == "die":
            os._exit(3)
        if key == "stubborn":  # ignores SIGTERM and never finishes
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(3600)
        if key == "slow":
            time.sleep(3600)
        if key == "large":  # 4 MB: many times a pipe's 64 KB buffer
            return np.ones((4, 512, 512), np.float32), np.ones((512, 512), np.float32)
        if isinstance(key, float):  # takes that many seconds to prepare
            time.sleep(key)
        return np.full((3, 2, 2), key, np.float32), np.full((2, 2), -key, np.float32)


def batches(*keys_per_batch):
    return [list(keys) for keys in keys_per_batch]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_until_gone(pids, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_batches_come_in_sampler_order_whatever_the_number_of_processes(workers):
    sampler = batches(*[(i, i + 1) for i in range(0, 20, 2)])
    with BatchLoader(Numbers(), sampler, workers) as loader:
        for _ in range(2):  # the processes serve a second epoch too
            seen = [
                (images[:, 0, 0, 0].asnumpy().tolist(), labels[:, 0, 0].asnumpy().tolist()) for images, labels in loader
            ]
            assert seen == [([i, i + 1], [-i, -(i + 1)]) for i in range(0, 20, 2)]
    assert len(loader) == 10


def test_a_user_error_in_a_loader_process_is_raised_as_the_same_sentence():
    with BatchLoader(Numbers(), batches((1,), ("user-error",), (2,)), 2) as loader:
        with pytest.raises(UserError, match="The image seven.jpg could not be decoded"):
            list(loader)


def test_a_bug_in_a_loader_process_is_reported_with_its_traceback():
    with BatchLoader(Numbers(), batches(("bug",)), 1) as loader:
        with pytest.raises(LoaderProcessFailed, match="KeyError.*no such thing"):
            list(loader)


def test_a_loader_process_that_dies_is_an_error_not_a_hang():
    with BatchLoader(Numbers(), batches((1,), ("die",)), 1) as loader:
        with pytest.raises(LoaderProcessFailed, match="exit code 3"):
            list(loader)


def test_an_abandoned_epoch_leaves_nothing_for_the_next():
    sampler = batches(*[(i,) for i in range(8)])
    with BatchLoader(Numbers(), sampler, 2, prefetch=4) as loader:
        first = iter(loader)
        next(first)
        first.close()  # as a SIGTERM or an error leaves an epoch, batches still in flight
        assert [int(images[0, 0, 0, 0].asscalar()) for images, _ in loader] == list(range(8))


def test_batches_larger_than_a_pipe_arrive_while_the_consumer_is_busy():
    with BatchLoader(Numbers(), batches(("large",), ("large",)), 1) as loader:
        batches_ = iter(loader)
        next(batches_)  # the consumer now trains on it and does not ask for the next one
        deadline = time.monotonic() + 60
        while loader._inboxes[0].qsize() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert loader._inboxes[0].qsize() == 1  # the second batch crossed its pipe without being asked for
        next(batches_)


@pytest.mark.parametrize("workers", [0, 1])
def test_waited_counts_batches_not_ready_and_not_the_consumers_own_time(workers):
    with BatchLoader(Numbers(), batches((0.3,), (0.3,), (0.0,)), workers) as loader:
        for _ in loader:
            time.sleep(1.0)  # training on the batch (3 s in all): not waiting for data
    if workers:  # the first batch's 0.3 s; the second was prepared while the consumer trained on the first
        assert 0.3 <= loader.waited < 1.5
    else:  # prepared in the consumer's thread: both preparations are waiting
        assert 0.6 <= loader.waited < 2.5


def stop_after(checks: int):
    """A stop check that reports SIGTERM from its ``checks``-th call on."""
    calls = []

    def stop_check():
        calls.append(1)
        if len(calls) >= checks:
            raise Stopped()

    return stop_check


def test_sigterm_is_noticed_while_a_batch_is_slow():
    loader = BatchLoader(Numbers(), batches(("slow",)), 1, stop_check=stop_after(3))
    start = time.monotonic()
    with pytest.raises(Stopped):
        list(loader)
    pids = [process.pid for process in loader._processes]
    loader.close()
    assert time.monotonic() - start < 30
    assert wait_until_gone(pids, 5)


def test_close_kills_a_loader_process_that_ignores_sigterm():
    loader = BatchLoader(Numbers(), batches(("stubborn",), ("stubborn",)), 2, stop_check=stop_after(3))
    with pytest.raises(Stopped):
        list(loader)
    pids = [process.pid for process in loader._processes]
    start = time.monotonic()
    loader.close(seconds=1)
    assert time.monotonic() - start < 10
    assert wait_until_gone(pids, 5)


def test_loader_processes_die_with_a_main_process_killed_by_sigkill(tmp_path):
    program = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_batch_loader import Numbers
        from semseg.data.batch_loader import BatchLoader
        loader = BatchLoader(Numbers(), [[1], [2], ["slow"]], 2)
        batches = iter(loader)
        next(batches)
        print(" ".join(str(process.pid) for process in loader._processes), flush=True)
        time.sleep(3600)
    """)
    main = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in main.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    finally:
        main.kill()
        main.wait()
    assert wait_until_gone(pids, 10)
