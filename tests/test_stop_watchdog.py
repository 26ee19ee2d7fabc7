"""SIGTERM ends ``train`` even when its main thread never gets back to checking the stop flag."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from semseg import exit_codes

# A process that installs the stop flag, then blocks for good on a lock that nothing releases, as a
# deadlocked operator would: the flag is set, but nothing ever reads it.
STUCK = """
import signal, threading
from semseg.train import stop
stop.StopFlag().install(deadline=1.0)
signal.signal(signal.SIGUSR1, lambda *args: None)
print("ready", flush=True)
lock = threading.Lock()
lock.acquire()
lock.acquire()
"""


def start_stuck() -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", STUCK], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def test_a_stuck_process_exits_as_stopped_once_the_deadline_after_sigterm_passes():
    process = start_stuck()
    try:
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == exit_codes.STOPPED
        assert time.monotonic() - sent >= 1.0
        assert "Training did not stop within 1 s of SIGTERM" in process.stderr.read()
    finally:
        process.kill()
        process.wait()


def test_other_signals_do_not_start_the_deadline():
    process = start_stuck()
    try:
        process.send_signal(signal.SIGUSR1)
        time.sleep(3.0)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()
