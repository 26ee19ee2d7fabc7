"""Multi-host data-parallel training on MXNet's parameter server, started by ``train`` itself.

When ``resourceconfig.json`` lists several hosts, every host runs one worker (the ``train``
process) and one parameter server, and the first host of the sorted list also runs the
scheduler, as the AWS MXNet containers do: ``python -c 'import mxnet'`` with ``DMLC_ROLE`` set
runs a server or scheduler loop. The ``DMLC_*`` variables must be set before the worker imports
mxnet, which is why ``start`` runs in ``train.command.train_main`` before the training loop is imported
(this module never imports mxnet; ``kvstore`` does, inside the loop).

ps-lite has no failure handling: a worker whose peer died waits forever. So the hosts also keep a
control channel of their own, JSON lines over TCP from every host to ``hosts[0]:_ps_port + 1``:

- at start, a barrier (``START_TIMEOUT``) that also agrees on the checkpoint every host resumes
  from (the newest position all hosts hold complete);
- while training, heartbeats every ``HEARTBEAT_INTERVAL`` s. A host that fails says so before it
  exits; a host that dies closes its connection; a silent one times out after ``HEARTBEAT_TIMEOUT``
  s. The first host relays the news, and every host writes a failure file naming the host at fault
  and exits, whatever its training thread is blocked on;
- at the end, a barrier, after which every process exits at once, skipping ps-lite's shutdown
  handshake (which would wait forever for a peer that died after the barrier).

The server and scheduler are children that die with their parent (``PR_SET_PDEATHSIG``).

What travels through the kvstore once training runs (gradients, BatchNorm statistics, the stop
flag) is in ``kvstore``; which samples each worker loads is ``data.dataset.WorkerBatches``.

Host names are resolved by DNS with retries (SageMaker's names may take a while to appear). For
runs of several "hosts" on one machine, ``SEMSEG_HOST_ADDRESSES="algo-1=127.0.0.1,algo-2=127.0.0.1"``
maps names to addresses without DNS.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from .. import exit_codes, hyperparameters, paths, sm_config
from ..errors import UserError
from ..processes import die_with_parent
from . import checkpoint

log = logging.getLogger("semseg")

HOST_ADDRESSES_ENV = "SEMSEG_HOST_ADDRESSES"
RESOLVE_TIMEOUT = 15 * 60  # as the AWS MXNet container retries DNS
START_TIMEOUT = 15 * 60
HEARTBEAT_INTERVAL = 5
HEARTBEAT_TIMEOUT = 60
STOP_GRACE = 90  # a stopped peer leaves this host this long to stop too (SageMaker allows 120 s)


def host_overrides() -> dict[str, str]:
    text = os.environ.get(HOST_ADDRESSES_ENV, "").strip()
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise UserError(f"{HOST_ADDRESSES_ENV} must look like 'algo-1=10.0.0.1,algo-2=10.0.0.2'")
    return {name.strip(): address.strip() for name, address in pairs}


def resolve(host: str, timeout: float = RESOLVE_TIMEOUT) -> str:
    """The IPv4 address of ``host``, retrying with exponential backoff while DNS catches up."""
    override = host_overrides().get(host)
    if override:
        return override
    deadline, wait = time.time() + timeout, 0.1
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError as exc:
            if time.time() + wait > deadline:
                raise UserError(f"The host name {host} could not be resolved within {timeout:.0f} s ({exc})") from None
            time.sleep(wait)
            wait = min(wait * 2, 30)


class _Connection:
    """One JSON-lines TCP connection to a peer; sends are serialised, failures to send are ignored
    (the reader notices a lost peer)."""

    def __init__(self, sock: socket.socket, host: str = "?"):
        self.sock, self.host = sock, host
        self.reader = sock.makefile("r", encoding="utf-8")
        self.lock = threading.Lock()

    def send(self, **message) -> None:
        data = (json.dumps(message) + "\n").encode()
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass

    def receive(self, timeout: float) -> dict | None:
        """The next message, or None when the peer closed the connection or stayed silent."""
        self.sock.settimeout(timeout)
        try:
            line = self.reader.readline()
            return json.loads(line) if line else None
        except (OSError, ValueError):
            return None


@dataclass
class Cluster:
    """This host's place in a multi-host job, the control channel, and the ps-lite children."""

    hosts: list[str]
    host: str
    port: int
    master_address: str
    resume_position: checkpoint.Position | None = None

    def __post_init__(self):
        self.rank, self.size = self.hosts.index(self.host), len(self.hosts)
        self.is_master = self.rank == 0
        self.peers: dict[str, _Connection] = {}
        self.children: list[tuple[str, subprocess.Popen]] = []
        self._done: set[str] = set()
        self._left: set[str] = set()
        self._finished = threading.Event()
        self._exit_lock = threading.Lock()
        self._stop_deadline: float | None = None

    # ---- start -------------------------------------------------------------------------------
    def rendezvous(self) -> None:
        """Barrier of all hosts, agreeing on the checkpoint position to resume from."""
        own = checkpoint.complete_positions(self.host)
        control = (self.master_address, self.port + 1)
        deadline = time.time() + START_TIMEOUT
        if self.is_master:
            held = {self.host: set(own)}
            with socket.create_server(control) as server:
                server.settimeout(1.0)
                while len(self.peers) < self.size - 1:
                    if time.time() > deadline:
                        missing = sorted(set(self.hosts) - set(held))
                        raise UserError(
                            f"The hosts {', '.join(missing)} did not join the training job within {START_TIMEOUT} s"
                        )
                    try:
                        sock, _ = server.accept()
                    except TimeoutError:
                        continue
                    connection = _Connection(sock)
                    hello = connection.receive(30)
                    if not hello or hello.get("host") not in self.hosts or hello["host"] in held:
                        sock.close()
                        continue
                    connection.host = hello["host"]
                    held[connection.host] = {tuple(p) for p in hello.get("checkpoints", [])}
                    self.peers[connection.host] = connection
            common = set.intersection(*held.values())
            self.resume_position = max(common) if common else None
            for connection in self.peers.values():
                connection.send(go=True, resume=self.resume_position)
        else:
            while True:
                try:
                    sock = socket.create_connection(control, timeout=10)
                    break
                except OSError as exc:
                    if time.time() > deadline:
                        raise UserError(
                            f"The first host {self.hosts[0]} could not be reached at "
                            f"{control[0]}:{control[1]} within {START_TIMEOUT} s ({exc})"
                        ) from None
                    time.sleep(1)
            connection = _Connection(sock, self.hosts[0])
            connection.send(host=self.host, checkpoints=own)
            go = connection.receive(START_TIMEOUT)
            if not go or not go.get("go"):
                raise UserError(f"The first host {self.hosts[0]} left the training job during start-up")
            self.resume_position = tuple(go["resume"]) if go.get("resume") else None
            self.peers[self.hosts[0]] = connection
        log.info("All %d hosts joined: this is %s, rank %d", self.size, self.host, self.rank)

    def dmlc_environment(self, role: str) -> dict[str, str]:
        return {
            "DMLC_ROLE": role,
            "DMLC_PS_ROOT_URI": self.master_address,
            "DMLC_PS_ROOT_PORT": str(self.port),
            "DMLC_NUM_WORKER": str(self.size),
            "DMLC_NUM_SERVER": str(self.size),
            "DMLC_NODE_HOST": resolve(self.host),
            "PS_VERBOSE": "0",
        }

    def launch(self) -> None:
        """Start the scheduler (first host) and this host's server; make this process a worker."""
        for role in (["scheduler"] if self.is_master else []) + ["server"]:
            process = subprocess.Popen(
                [sys.executable, "-c", "import mxnet"],
                env={**os.environ, **self.dmlc_environment(role)},
                preexec_fn=die_with_parent,
                start_new_session=True,
            )
            self.children.append((role, process))
        os.environ.update(self.dmlc_environment("worker"))
        for connection in self.peers.values():
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()
        threading.Thread(target=self._heartbeat, daemon=True).start()

    # ---- watching ----------------------------------------------------------------------------
    def _read(self, connection: _Connection) -> None:
        peer = connection.host
        while True:
            message = connection.receive(HEARTBEAT_TIMEOUT)
            if message is None:
                if peer in self._done or peer in self._left or self._finished.is_set():
                    return
                self._relay_and_exit(
                    exit_codes.FAILED,
                    peer,
                    f"Host {peer} stopped responding or exited without a "
                    "word; the training job cannot go on without it",
                )
            elif "failed" in message:
                self._relay_and_exit(
                    exit_codes.FAILED,
                    message.get("host", peer),
                    f"Host {message.get('host', peer)} failed: {message['failed']}",
                )
            elif "stopped" in message:
                self._left.add(message.get("host", peer))
                self._broadcast(except_host=peer, **message)
                if self._stop_deadline is None:
                    self._stop_deadline = time.time() + STOP_GRACE
            elif "done" in message:
                self._done.add(peer)
                self._finish_when_all_done()
            elif "finish" in message:
                self._finished.set()

    def _heartbeat(self) -> None:
        while True:
            self._broadcast(ping=True)
            for role, process in self.children:
                if process.poll() is not None and not self._finished.is_set():
                    self._relay_and_exit(
                        exit_codes.FAILED,
                        self.host,
                        f"The parameter {role} of host {self.host} exited with code {process.returncode}",
                    )
            if self._stop_deadline is not None and time.time() > self._stop_deadline:
                self._exit(exit_codes.STOPPED, "Another host was stopped and this one did not stop in time")
            time.sleep(HEARTBEAT_INTERVAL)

    def _broadcast(self, except_host: str | None = None, **message) -> None:
        for host, connection in list(self.peers.items()):
            if host != except_host:
                connection.send(**message)

    def _relay_and_exit(self, code: int, culprit: str, reason: str) -> None:
        self._broadcast(except_host=culprit, host=culprit, failed=reason)
        self._exit(code, reason)

    def _finish_when_all_done(self) -> None:
        if self.is_master and self._done >= set(self.hosts):
            self._broadcast(finish=True)
            self._finished.set()

    # ---- end ---------------------------------------------------------------------------------
    def finish(self, code: int, message: str = "") -> None:
        """End this host's part: barrier on success, tell the others otherwise; never returns."""
        if code == 0:
            self._broadcast(host=self.host, done=True)
            self._done.add(self.host)
            self._finish_when_all_done()
            self._finished.wait()
            self._exit(0)
        if code == exit_codes.STOPPED:
            self._broadcast(host=self.host, stopped=True)
            self._exit(code)
        self._broadcast(host=self.host, failed=message)
        self._exit(code)

    def _exit(self, code: int, failure: str | None = None) -> None:
        with self._exit_lock:
            if failure:
                log.error("%s", failure)
                if code != exit_codes.STOPPED and not paths.failure_file().exists():
                    sm_config.write_failure(failure)
            for _, process in self.children:
                if process.poll() is None:
                    process.kill()
            for _, process in self.children:
                process.wait()
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def start() -> Cluster | None:
    """For a multi-host job: resolve, rendezvous, launch the ps-lite processes. None on one host."""
    resources = sm_config.read_resource_config()
    if len(resources.hosts) < 2:
        return None
    if resources.current_host not in resources.hosts:
        raise UserError(
            f"current_host {resources.current_host} is not among the hosts {resources.hosts} of resourceconfig.json"
        )
    hp = hyperparameters.parse(sm_config.read_hyperparameters())
    cluster = Cluster(resources.hosts, resources.current_host, hp["_ps_port"], resolve(resources.hosts[0]))
    cluster.rendezvous()
    cluster.launch()
    return cluster
