"""SIGTERM as SageMaker sends it: a flag the loop checks between steps, and the ``Stopped`` it raises.

The handler is installed first thing in ``train``, before MXNet is imported, so a SIGTERM that
arrives while the job is still starting is noticed at the first check instead of killing the
process with nothing said. Loader processes set SIGTERM back to its default action themselves
(``data.batch_loader``). In a multi-host job ``agree`` makes the check collective, so every host
stops at the same iteration (a host that went on alone would wait for the others forever).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from .. import exit_codes

log = logging.getLogger(__name__)
STOP_DEADLINE_S = 90.0


class Stopped(Exception):
    """SIGTERM arrived: the job stops at the next check."""


class StopFlag:
    """Set by SIGTERM; ``check()`` raises ``Stopped`` once it is set (once every host agrees)."""

    def __init__(self):
        self.raised = False
        self.agree: Callable[[bool], bool] | None = None

    def install(self, *signals: signal.Signals, deadline: float | None = None) -> StopFlag:
        """Set the flag on ``signals`` (SIGTERM, as SageMaker sends it, unless others are named);
        with ``deadline``, also end the process that many seconds after one of them."""
        chosen = signals or (signal.SIGTERM,)
        for signum in chosen:
            signal.signal(signum, self._handle)
        if deadline is None:
            return self
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        watchdog = threading.Thread(target=self._watch, args=(read_end, set(chosen), deadline), daemon=True)
        watchdog.start()
        return self

    @staticmethod
    def _watch(read_end: int, signums: set[int], deadline: float) -> None:
        """Each byte on the wakeup pipe is a signal's number; after ours, wait out the deadline, then exit."""
        while os.read(read_end, 1)[0] not in signums:
            pass
        time.sleep(deadline)
        log.error("Training did not stop within %.0f s of SIGTERM; the process ends here", deadline)
        logging.shutdown()
        os._exit(exit_codes.STOPPED)

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def check(self) -> None:
        """Raise ``Stopped`` once any host got SIGTERM: a collective call once ``agree`` is set."""
        if self.agree(self.raised) if self.agree else self.raised:
            raise Stopped()

    def check_here(self) -> None:
        """Raise ``Stopped`` once this host got SIGTERM; never a collective call.

        For checks whose number differs from host to host (while waiting for a batch, over a
        validation stream of this host's own length): a collective there would pair with another
        host's gradient exchange and hang both.
        """
        if self.raised:
            raise Stopped()
