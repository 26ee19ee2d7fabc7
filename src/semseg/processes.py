"""Child processes that cannot outlive the job that started them."""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """Have Linux SIGKILL this process when the thread that started it ends, however that happens.

    A job killed with SIGKILL (SageMaker's last word, the OOM killer) runs no cleanup of its own;
    without this its children would live on, holding memory, ports or a FIFO.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
