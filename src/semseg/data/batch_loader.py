"""Batches prepared in loader processes whose lifetime the job owns, start to end.

gluon's ``DataLoader`` hands its ``multiprocessing.Pool`` to garbage collection: ``Pool.terminate``
runs from ``DataLoader.__del__`` at interpreter exit (or when a worker raises) and waits on the
pool's shared queue lock and on its processes. A loader process that died or was stopped while
holding that lock, or one that never sees its SIGTERM, leaves ``train`` alive after its last
artifact until someone kills it, and SageMaker bills it until its stopping condition. So here:

- each loader process has its own pipes (tasks in, batches out): no lock is shared between
  processes, and a dead one is noticed by its exit, not by a lock that never frees;
- a reader thread in each loader process always drains its task pipe, so the main process never
  blocks on sending while the loader process blocks on sending a batch back;
- a reader thread in the main process always drains each result pipe: a batch (megabytes) crosses
  a pipe of 64 KB only while someone reads it, and the training loop reads only when it wants the
  next batch, so without it the transfer could not overlap the previous step; the reader also
  turns a loader process's death into the end of its pipe;
- ``close()`` ends them itself, SIGTERM first and SIGKILL for any still alive after a deadline;
  loader processes keep SIGTERM's default action (they hold nothing to save), ignore SIGINT (the
  main process decides), and die with the main process (``PR_SET_PDEATHSIG``) however it ends;
- they leave through ``os._exit``: no interpreter teardown, so no library finalizer can hang them.

Batches keep the order of the batch sampler whatever the number of processes, and an iteration
that the consumer abandons (SIGTERM, an error) never leaks its batches into the next one.

``waited`` counts the seconds the consumer spent waiting for batches that were not ready (and,
with no loader processes, preparing them). It leaves out turning a batch into ``NDArray``s:
``mx.nd.array`` waits until MXNet's CPU engine, one queue, has run what is already in it (the
previous step's update), which is training time, not time waiting for data.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import get_context

import mxnet as mx
import numpy as np

from ..errors import UserError
from ..processes import die_with_parent

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often a waiting main process checks for SIGTERM
CLOSE_SECONDS = 5.0  # how long close() waits for loader processes to end on SIGTERM before killing them


def no_stop() -> None:
    return None


def stack_batch(samples: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 3 x H x W, labels N x H x W) from a list of prepared pairs."""
    return np.stack([image for image, _ in samples]), np.stack([labels for _, labels in samples])


class LoaderProcessFailed(RuntimeError):
    """A loader process died (killed, out of memory) or raised something that is not the user's error."""


class _PipeEnded:
    """What a result reader hands on when its pipe ends: the loader process is gone (or closing)."""

    def __init__(self, error: BaseException):
        self.error = error


def _read_results(pipe, inbox: queue.SimpleQueue) -> None:
    """Move every message of a loader process's result pipe into ``inbox`` as soon as it arrives.

    ``recv`` releases the GIL while it reads, so this overlaps the transfer with training. The
    number of messages is bounded by the batches the main process asked for (``prefetch``).
    """
    try:
        while True:
            inbox.put(pipe.recv())
    except BaseException as exc:  # noqa: BLE001 - EOF when the process ends; anything else ends the pipe too
        inbox.put(_PipeEnded(exc))


def _loader_process(dataset, tasks, results, parent: int) -> None:
    """Prepare batches until told to stop, the task pipe closes or the main process dies."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    if os.getppid() != parent:  # the main process died before the request took effect
        os._exit(0)
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def drain_tasks() -> None:
        try:
            while True:
                inbox.put(tasks.recv())
        except (EOFError, OSError):
            inbox.put(None)

    threading.Thread(target=drain_tasks, daemon=True).start()
    code = 0
    try:
        while (task := inbox.get()) is not None:
            generation, keys = task
            try:
                reply = (generation, stack_batch([dataset[key] for key in keys]), None)
            except UserError as exc:
                reply = (generation, None, ("user", str(exc)))
            except Exception as exc:  # noqa: BLE001 - sent to the main process, which raises it
                reply = (generation, None, ("internal", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
            results.send(reply)
    except BaseException:  # noqa: BLE001 - a broken result pipe: the main process is gone or closing us
        code = 1
    finally:
        os._exit(code)


class BatchLoader:
    """Iterates batches of ``dataset[key]`` for the key lists ``batch_sampler`` yields.

    ``workers`` 0 prepares them in the calling thread; otherwise that many loader processes,
    forked on the first iteration and reused by later ones, keep up to ``prefetch`` batches in
    flight. ``stop_check`` runs while waiting for a batch, so SIGTERM is never delayed by a slow
    one. Call ``close()`` (or use ``with``) when done: nothing else ends the processes.
    """

    def __init__(
        self,
        dataset,
        batch_sampler: Iterable,
        workers: int = 0,
        prefetch: int | None = None,
        stop_check: Callable[[], None] = no_stop,
    ):
        self.dataset, self.batch_sampler, self.workers = dataset, batch_sampler, workers
        self.prefetch = max(1, prefetch or 2 * workers)
        self.stop_check = stop_check
        self._processes: list = []
        self._task_pipes: list = []
        self._result_pipes: list = []
        self._inboxes: list[queue.SimpleQueue] = []  # per loader process: its results, read by a thread
        self._readers: list[threading.Thread] = []
        self._generation = 0
        self.waited = 0.0  # seconds spent waiting for (or preparing) batches, over every iteration

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[mx.nd.NDArray, mx.nd.NDArray]]:
        if self.workers == 0:
            started = time.perf_counter()
            for keys in self.batch_sampler:
                arrays = stack_batch([self.dataset[key] for key in keys])
                self.waited += time.perf_counter() - started
                yield self._as_arrays(arrays)
                started = time.perf_counter()
            return
        self._start()
        self._generation += 1
        generation, in_flight = self._generation, deque()
        batches = iter(self.batch_sampler)
        sent = 0

        def send_next() -> bool:
            nonlocal sent
            keys = next(batches, None)
            if keys is None:
                return False
            worker = sent % self.workers
            self._task_pipes[worker].send((generation, keys))
            in_flight.append(worker)
            sent += 1
            return True

        try:
            started, more = time.perf_counter(), True
            while more and len(in_flight) < self.prefetch:
                more = send_next()
            while in_flight:
                arrays = self._receive(in_flight.popleft(), generation)
                more = more and send_next()  # Pipe mode reads the next records here
                self.waited += time.perf_counter() - started
                yield self._as_arrays(arrays)
                started = time.perf_counter()
        finally:
            close = getattr(batches, "close", None)  # a generator sampler (Pipe mode) closes its FIFO
            if close is not None:
                close()

    @staticmethod
    def _as_arrays(arrays: tuple[np.ndarray, np.ndarray]) -> tuple[mx.nd.NDArray, mx.nd.NDArray]:
        images, labels = arrays
        return mx.nd.array(images, dtype=images.dtype), mx.nd.array(labels, dtype=labels.dtype)

    def _start(self) -> None:
        if self._processes:
            return
        context = get_context("fork")  # the dataset is inherited, not pickled; workers start in milliseconds
        for number in range(self.workers):
            task_out, task_in = context.Pipe(duplex=False)
            result_out, result_in = context.Pipe(duplex=False)
            process = context.Process(
                target=_loader_process,
                name=f"loader-{number}",
                args=(self.dataset, task_out, result_in, os.getpid()),
                daemon=True,
            )
            process.start()
            task_out.close()
            result_in.close()
            self._processes.append(process)
            self._task_pipes.append(task_in)
            self._result_pipes.append(result_out)
            inbox: queue.SimpleQueue = queue.SimpleQueue()
            reader = threading.Thread(target=_read_results, args=(result_out, inbox), name=f"{process.name}-results")
            reader.daemon = True
            self._inboxes.append(inbox)
            self._readers.append(reader)
        for reader in self._readers:  # started after every fork, so no loader process inherits a running thread
            reader.start()

    def _receive(self, worker: int, generation: int) -> tuple[np.ndarray, np.ndarray]:
        """The next batch of this iteration from ``worker``; batches of abandoned iterations are dropped."""
        inbox, process = self._inboxes[worker], self._processes[worker]
        while True:
            try:
                message = inbox.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self.stop_check()
                continue
            if isinstance(message, _PipeEnded):
                process.join(CLOSE_SECONDS)  # its pipe closes a moment before it can be reaped
                if isinstance(message.error, EOFError | OSError):
                    raise LoaderProcessFailed(
                        f"A data loader process ended with exit code {process.exitcode} "
                        "while preparing a batch (out of memory or killed?)"
                    )
                raise LoaderProcessFailed(f"Reading a data loader process's batch failed: {message.error!r}")
            sent_generation, arrays, error = message
            if sent_generation != generation:
                continue
            if error is None:
                return arrays
            kind, message = error
            if kind == "user":
                raise UserError(message)
            raise LoaderProcessFailed(f"A data loader process failed: {message}")

    def close(self, seconds: float = CLOSE_SECONDS) -> None:
        """End the loader processes: SIGTERM, up to ``seconds`` for them to go, then SIGKILL."""
        processes, self._processes = self._processes, []
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(seconds / max(1, len(processes)))
        for process in processes:
            if process.is_alive():
                log.warning("Data loader process %s did not end on SIGTERM; killing it", process.pid)
                process.kill()
                process.join(1)
        for reader in self._readers:  # their pipes ended with the processes that wrote to them
            reader.join(1)
        for pipe in self._task_pipes + self._result_pipes:
            pipe.close()
        self._task_pipes, self._result_pipes, self._inboxes, self._readers = [], [], [], []
