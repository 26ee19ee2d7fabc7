"""Checkpoints: the whole training state, so a stopped or reclaimed job continues where it was.

SageMaker copies ``/opt/ml/checkpoints`` (or the ``LocalPath`` of ``checkpointconfig.json``) to S3
while the job runs and back into the container when a spot job restarts. A checkpoint is a
directory ``<host>-<epoch>-<iteration>`` (the epoch in progress and the iterations of it already
trained; the host name keeps the hosts of one job apart) holding:

- ``weights.params``: the network's weights (BatchNorm statistics included);
- ``optimizer.states``: the optimizer's state (momentum, update counts), as ``Trainer.save_states``;
- ``best.params``: the weights of the best epoch so far (``model/`` of a restarted job is empty);
- ``state.json``: epoch, iteration within the epoch, the partial training loss of that epoch, the
  early-stopping counters, the history, the best epoch's report and the data sampler's random
  state (every other generator is re-seeded from ``_seed``, the epoch and the iteration);
- ``MANIFEST.json``, written last: the size and SHA-256 of every other file.

Writing goes to a hidden temporary directory that is renamed into place, and on start the newest
checkpoint whose files all match its manifest is used: a kill during a write, or a file cut short
on its way through S3, makes training fall back to the previous checkpoint, never resume wrongly.
The newest ``KEEP`` checkpoints of this host are kept; older ones are deleted (deletes reach S3 too).

Resuming is here too (``Saver.resume``): which checkpoint, checked against this run's configuration,
loaded into the network and optimizer, and where the resumed epoch starts (``TrainingState``).

This module does not import mxnet: multi-host start-up lists checkpoints before mxnet is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import hyperparameters, paths
from ..errors import UserError, explained_write_failure
from ..files import write_atomically

if TYPE_CHECKING:
    from .early_stopping import EarlyStopping

log = logging.getLogger("semseg")

KEEP = 2
FORMAT = 1
NEWEST = "newest"  # what a single host resumes from: its newest complete checkpoint
MANIFEST = "MANIFEST.json"
STATE = "state.json"
WEIGHTS = "weights.params"
OPTIMIZER = "optimizer.states"
BEST = "best.params"


def directory() -> Path:
    """The checkpoint directory: ``LocalPath`` of checkpointconfig.json, else /opt/ml/checkpoints."""
    config = paths.checkpoint_config_file()
    if config.exists():
        try:
            local_path = json.loads(config.read_text()).get("LocalPath")
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            raise UserError(f"The configuration file {config} is not a valid JSON object ({exc})") from None
        if local_path:
            return Path(local_path)
    return paths.checkpoints_dir()


def enabled() -> bool:
    """Checkpoints are written when SageMaker's CheckpointConfig is set or the directory exists.

    Without either (a plain ``docker run`` that mounts no checkpoint directory), a checkpoint would
    only fill the container's disk: three times the model's size, every epoch.
    """
    return paths.checkpoint_config_file().exists() or directory().is_dir()


Position = tuple[int, int]  # (epoch, iterations of it done); (e, n) is after training, before evaluation


def _name(host: str, position: Position) -> str:
    return f"{host}-{position[0]:05d}-{position[1]:07d}"


def _position(host: str, name: str) -> Position | None:
    rest = name[len(host) + 1 :] if name.startswith(host + "-") else ""
    parts = rest.split("-")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return None
    return int(parts[0]), int(parts[1])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def problem(path: Path, checksums: bool = True) -> str | None:
    """Why the checkpoint at ``path`` cannot be used, or None when every file matches the manifest
    (sizes only when ``checksums`` is False)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "its manifest is missing or unreadable"
    if manifest.get("format") != FORMAT or STATE not in files:
        return "its manifest is of another format"
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["size"]:
            return f"{name} has {file.stat().st_size} bytes instead of {expected['size']}"
        if checksums and _sha256(file) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def positions(host: str, root: Path | None = None) -> list[Position]:
    """Positions of this host's checkpoints, newest first, complete or not."""
    root = root or directory()
    if not root.is_dir():
        return []
    found = (_position(host, p.name) for p in root.iterdir() if p.is_dir())
    return sorted((p for p in found if p is not None), reverse=True)


def complete_positions(host: str) -> list[Position]:
    """Positions of this host's usable checkpoints, newest first; unusable ones are logged."""
    root, usable = directory(), []
    for position in positions(host, root):
        reason = problem(root / _name(host, position))
        if reason is None:
            usable.append(position)
        else:
            log.warning("Checkpoint %s cannot be used: %s", root / _name(host, position), reason)
    return usable


@dataclass
class Checkpoint:
    path: Path
    state: dict[str, Any]

    def file(self, name: str) -> Path | None:
        path = self.path / name
        return path if path.is_file() else None


def load(host: str, position: Position | None = None) -> Checkpoint | None:
    """This host's checkpoint at ``position`` (checked), or the newest complete one when None."""
    if position is None:
        usable = complete_positions(host)
        if not usable:
            return None
        position = usable[0]
    path = directory() / _name(host, position)
    reason = problem(path)
    if reason is not None:
        raise UserError(f"Checkpoint {path} cannot be used: {reason}")
    return Checkpoint(path, json.loads((path / STATE).read_text()))


def save(host: str, position: Position, state: dict[str, Any], files: dict[str, Callable[[str], None]]) -> Path:
    """Write a checkpoint atomically: each ``files[name](tmp_path)`` writes one file, the manifest goes last."""
    root = directory()
    root.mkdir(parents=True, exist_ok=True)
    final = root / _name(host, position)
    tmp = root / f".{final.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        writers = {**files, STATE: lambda p: Path(p).write_text(json.dumps({"format": FORMAT, **state}))}
        manifest = {}
        with explained_write_failure(final):
            for name, write in writers.items():
                write(str(tmp / name))
                with open(tmp / name, "rb") as handle:
                    os.fsync(handle.fileno())
                manifest[name] = {"size": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
            (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": manifest}, indent=1))
            with open(tmp / MANIFEST, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(host, root)
    return final


def _prune(host: str, root: Path) -> None:
    """Keep the newest KEEP complete checkpoints of this host; drop older, unusable and half-written ones."""
    for stale in root.glob(f".{host}-*.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    kept = 0
    for position in positions(host, root):
        path = root / _name(host, position)
        if kept < KEEP and problem(path, checksums=False) is None:
            kept += 1
        else:
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class EpochProgress:
    """How far an epoch got, so that SIGTERM can checkpoint it and a resumed run continue it."""

    done: int = 0  # iterations trained
    loss: float = 0.0  # their summed loss over this host's samples
    samples: int = 0


@dataclass
class TrainingState:
    """Where training is, beyond the weights and the optimizer: what a checkpoint's state.json holds."""

    epoch: int = 0  # the epoch in progress, or the next one
    iteration: int = 0  # iterations of ``epoch`` already trained
    loss: float = 0.0  # their summed training loss, over ``samples`` samples of this host
    samples: int = 0
    sampler: dict | None = None  # the train sampler's state at the start of ``epoch``
    early_stopping: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    best: dict | None = None
    early_stopped: bool = False
    configuration: dict = field(default_factory=dict)  # what must match for the state to apply

    @property
    def position(self) -> Position:
        return self.epoch, self.iteration

    def progress_in(self, epoch: int, iterations: int, can_skip: bool) -> EpochProgress:
        """Where ``epoch`` starts: after this state's iterations if it is the resumed epoch and the
        data can skip to them (a stream cannot, so only a wholly trained epoch is skipped there)."""
        if epoch == self.epoch and (can_skip or self.iteration == iterations):
            return EpochProgress(self.iteration, self.loss, self.samples)
        return EpochProgress()

    def move_to(self, epoch: int, progress: EpochProgress, sampler: dict | None, stopping: EarlyStopping) -> None:
        """Record a position worth saving: ``progress`` into ``epoch``, the sampler state at its start."""
        self.epoch, self.iteration, self.loss, self.samples = epoch, progress.done, progress.loss, progress.samples
        self.sampler = sampler
        self.early_stopping = {"best": stopping.best, "epochs_without_improvement": stopping.epochs_without_improvement}

    def restore_early_stopping(self, stopping: EarlyStopping) -> None:
        for key, value in self.early_stopping.items():
            setattr(stopping, key, value)


def training_configuration(hp: dict, iterations: int, hosts: int) -> dict:
    """What a checkpoint must share with this run to be resumed by it."""
    keys = hyperparameters.ARCHITECTURE_KEYS + ("mini_batch_size", "_seed")
    return {
        **{key: hyperparameters.to_string(hp[key]) for key in keys},
        "iterations_per_epoch": iterations,
        "hosts": hosts,
    }


@dataclass
class Saver:
    """This host's checkpoints of one run: what they hold besides the ``TrainingState``, and resuming."""

    host: str
    net: Any
    trainer: Any
    best_weights: Path | None  # model_best.params, on the host that writes the model; None elsewhere

    def save(self, state: TrainingState) -> Path | None:
        """Checkpoint ``state`` with the network's weights, the optimizer state and the best weights."""
        if not enabled():
            return None
        files = {WEIGHTS: self.net.save_parameters, OPTIMIZER: self.trainer.save_states}
        best = self.best_weights
        if best is not None and best.is_file():
            files[BEST] = lambda tmp: _link_or_copy(best, Path(tmp))
        path = save(self.host, state.position, asdict(state), files)
        log.info("Checkpoint saved to %s (epoch %d, iteration %d)", path, state.epoch, state.iteration)
        return path

    def resume(self, configuration: dict, ctx: list, position: Position | str | None = NEWEST) -> TrainingState:
        """A checkpoint's state, loaded into the network and optimizer; a fresh state without one.

        ``position`` is ``NEWEST`` for one host (its newest complete checkpoint); in a multi-host job
        it is the position all hosts agreed on at start-up, None when they hold none in common.
        """
        if not enabled():
            log.info("Checkpoints are off: neither %s nor %s exists", paths.checkpoint_config_file(), directory())
        if position is None:
            return TrainingState(configuration=configuration)
        found = load(self.host, None if position == NEWEST else position)
        if found is None:
            return TrainingState(configuration=configuration)
        state = _checked_state(found, configuration)
        self.net.load_parameters(str(found.path / WEIGHTS), ctx=ctx)
        self.trainer.load_states(str(found.path / OPTIMIZER))
        log.info(
            "Resuming from checkpoint %s: epoch %d, after %d of its %d iterations",
            found.path,
            state.epoch,
            state.iteration,
            configuration["iterations_per_epoch"],
        )
        best = found.file(BEST)
        if best is not None and self.best_weights is not None:
            write_atomically(self.best_weights, lambda tmp: shutil.copyfile(best, tmp))
        return state


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where possible: model_best.params is replaced by rename, never rewritten in place."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _checked_state(found: Checkpoint, configuration: dict) -> TrainingState:
    """A checkpoint's TrainingState, refused when it belongs to another ``configuration``."""
    state = TrainingState(**{k: v for k, v in found.state.items() if k in TrainingState.__dataclass_fields__})
    differences = [
        f"{key} is {value} here but {state.configuration.get(key)} in the checkpoint"
        for key, value in configuration.items()
        if state.configuration.get(key) != value
    ]
    if differences:
        raise UserError(
            f"The checkpoint {found.path} belongs to another training configuration "
            f"({'; '.join(differences)}); remove it or give this job another checkpoint location"
        )
    return state
