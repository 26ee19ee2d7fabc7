"""``semseg job REQUEST.json``: the training job a CreateTrainingJob request describes, run here.

This module plays SageMaker's part around the unchanged ``train`` command: it lays out a job folder
as /opt/ml (``paths``) with the configuration files SageMaker writes (``sm_config``), downloads
File-mode channels, feeds Pipe-mode channels, keeps checkpoints in sync with S3, runs ``train`` as
a child process (or in ``TrainingImage`` through Docker, ``training_image``) under
``MaxRuntimeInSeconds``, then packages ``model.tar.gz`` and ``output.tar.gz`` and uploads them to
``<S3OutputPath>/<TrainingJobName>/output/``. It ends by printing what ``describe_training_job``
would report.

Rerunning a job in the same folder resumes its downloads: files already fetched whole are kept.
Everything else starts afresh as on SageMaker (model/, output/ and checkpoints/ emptied, the
checkpoints restored from ``CheckpointConfig.S3Uri``). So a job runs only in a new or empty folder,
or in one an earlier ``semseg job`` made (it holds ``JOB_MARK``): no folder of anyone else's is emptied.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths, sm_config
from ..errors import UserError
from ..names import shown
from ..processes import die_with_parent
from ..train.stop import StopFlag
from .checkpoint_sync import CheckpointSync
from .hosts import Host, HostGroup, environ_for, free_port_pair, hosts_of, resource_config
from .metric_log import LOG_FILE, TIMELINE_FILE, MetricLog, iso
from .pipe_source import PipeFeeder
from .request import JobRequest
from .training_image import CONTAINER_ML, ContainerTraining, ensure_image
from .transfer import download, upload_file

log = logging.getLogger("semseg")

STOP_GRACE_S = 120  # SageMaker's StopTrainingJob: SIGTERM, then SIGKILL 120 s later
POLL_S = 0.5
# Weights barely compress: level 1 saves about 7% of a model.tar.gz and costs about 7 s per 100 MB on a
# loaded 2-core machine; 0 still writes gzip (stored blocks), at disk speed.
GZIP_LEVEL_VARIABLE = "SEMSEG_JOB_GZIP_LEVEL"
GZIP_LEVEL_DEFAULT = 1
JOB_MARK = ".semseg-job"  # in every job folder: what makes a folder this program's to empty
STAGING = ".staging"  # the job's files in flight: channels/<channel>/ and checkpoints/


@dataclass
class Outcome:
    status: str = "InProgress"
    secondary: str = "Starting"
    failure: str | None = None
    exit_code: int | None = None
    started: float = field(default_factory=time.time)
    ended: float | None = None
    transitions: list[dict] = field(default_factory=list)  # SecondaryStatusTransitions, oldest first

    def __post_init__(self) -> None:
        self.transitions.append({"Status": self.secondary, "StartTime": iso(self.started)})

    def __setattr__(self, name: str, value) -> None:
        """Each change of ``secondary`` ends the current transition and starts the next, as SageMaker lists them."""
        if name == "secondary" and "transitions" in self.__dict__ and value != self.secondary:
            now = iso(time.time())
            self.transitions[-1]["EndTime"] = now
            self.transitions.append({"Status": value, "StartTime": now})
        super().__setattr__(name, value)

    def close_transitions(self) -> None:
        """At the job's end: its last status ends too."""
        if self.transitions:
            self.transitions[-1].setdefault("EndTime", iso(time.time()))


def describe(request: JobRequest, outcome: Outcome, final_metrics: list[dict] | None = None) -> dict:
    """The fields of ``describe_training_job``'s answer that a local job has."""
    description = {
        "TrainingJobName": request.name,
        "TrainingJobStatus": outcome.status,
        "SecondaryStatus": outcome.secondary,
        "OutputDataConfig": {"S3OutputPath": request.output_path.uri},
        "TrainingStartTime": iso(outcome.started),
    }
    if outcome.status in ("Completed", "Stopped"):
        description["ModelArtifacts"] = {"S3ModelArtifacts": request.model_uri().uri}
    if outcome.failure:
        description["FailureReason"] = outcome.failure
    if request.checkpoint_uri:
        description["CheckpointConfig"] = {"S3Uri": request.checkpoint_uri.uri}
    description["SecondaryStatusTransitions"] = outcome.transitions
    if final_metrics:
        description["FinalMetricDataList"] = final_metrics
    if outcome.ended is not None:
        description["TrainingEndTime"] = iso(outcome.ended)
        description["TrainingTimeInSeconds"] = int(round(outcome.ended - outcome.started))
    return description


def claim(root: Path) -> None:
    """Make ``root`` a job folder, or refuse in one sentence before anything is written: ``prepare``
    empties parts of it, which only a folder this program made (or an empty one) may lose."""
    if root.exists() and not root.is_dir():
        raise UserError(f"The job folder {root} is a file; give --workdir a new or empty folder")
    if root.is_dir() and not (root / JOB_MARK).is_file() and any(root.iterdir()):
        raise UserError(
            f"The folder {root} holds files and is not a job folder of semseg job; give --workdir a new or empty folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / JOB_MARK).touch()


def _remove(entry: Path) -> None:
    """Remove a file, FIFO, link or folder of the job folder (a link, never what it points to)."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    elif entry.is_symlink() or entry.exists():
        entry.unlink()


def _fresh(directory: Path) -> None:
    _remove(directory)
    directory.mkdir(parents=True)


def channel_staging(root: Path, channel: str) -> Path:
    return root / STAGING / "channels" / paths.check_channel_name(channel)


def prepare(request: JobRequest, host: Host, group: list[Host]) -> None:
    """The job folder as SageMaker leaves /opt/ml before ``train`` starts, less the data itself.

    Only ever called on a folder ``claim`` made this job's; every path removed is a fixed part of the
    layout (``paths``) or an entry of input/data, none made of a name from the request.
    """
    root = host.root
    for directory in (paths.model_dir(root), paths.output_dir(root), paths.output_data_dir(root)):
        _fresh(directory)
    _remove(paths.checkpoints_dir(root))
    data = paths.data_dir(root)
    data.mkdir(parents=True, exist_ok=True)
    kept = {c.name for c in request.channels if not c.is_pipe}
    for entry in data.iterdir():  # channels of an earlier request, FIFOs of an earlier run
        if entry.name not in kept:
            _remove(entry)
    checkpoint = None
    if request.checkpoint_uri:
        seen_by_training = CONTAINER_ML if request.training_image else root
        checkpoint = {"LocalPath": str(paths.checkpoints_dir(seen_by_training)), "S3Uri": request.checkpoint_uri.uri}
    channels = {c.name: c.input_data_config() for c in request.channels}
    sm_config.write_config_files(root, request.hyperparameters, channels, resource_config(host, group), checkpoint)


def gzip_level() -> int:
    """The archives' gzip level: ``$SEMSEG_JOB_GZIP_LEVEL``, 0 to 9, else 1."""
    raw = os.environ.get(GZIP_LEVEL_VARIABLE, "").strip()
    if not raw:
        return GZIP_LEVEL_DEFAULT
    if not raw.isdigit() or int(raw) > 9:
        raise UserError(f"{GZIP_LEVEL_VARIABLE} is {raw!r}; it must be a gzip level from 0 (store) to 9")
    return int(raw)


def package(directory: Path, archive: Path, level: int = GZIP_LEVEL_DEFAULT) -> Path:
    """``directory``'s files at the root of a gzipped tar, as SageMaker packs model/ and output/data/."""
    with tarfile.open(archive, "w:gz", compresslevel=level) as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


TrainingProcess = subprocess.Popen | ContainerTraining | HostGroup  # all polled, stopped and killed alike


def start_training(request: JobRequest, group: list[Host], workdir: Path) -> TrainingProcess:
    """``train`` in ``TrainingImage`` when the request names one, else this environment's ``train``, on
    each host: the first host's output is the job's log, the others' go to ``training-<host>.log``."""
    if request.training_image:
        root = group[0].root
        return ContainerTraining(request.training_image, root, request.name, request.environment, STOP_GRACE_S)
    train_command = str(Path(sys.executable).parent / "train")
    processes = []
    for host in group:
        output = subprocess.PIPE if host.rank == 0 else open(workdir / f"training-{host.name}.log", "wb")
        processes.append(
            subprocess.Popen(
                [train_command],
                env=environ_for(request.environment, host, group, request.name),
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        )
        if output is not subprocess.PIPE:
            output.close()  # the child holds its own copy
    if len(group) > 1:
        log.info(
            "%d hosts train (%s); each one's log but the first's: %s",
            len(group),
            ", ".join(h.name for h in group),
            workdir / "training-<host>.log",
        )
        return HostGroup(processes)
    return processes[0]


def supervise(
    train: TrainingProcess, request: JobRequest, outcome: Outcome, feeders: list[PipeFeeder], stop: StopFlag
) -> None:
    """Wait for ``train``; SIGTERM it (SIGKILL STOP_GRACE_S later) on MaxRuntime, a stop or a failed feed."""
    deadline = outcome.started + request.max_runtime_s if request.max_runtime_s else None
    terminated_at = None
    while train.poll() is None:
        reason = None
        if deadline is not None and time.time() > deadline:
            reason, outcome.secondary = "MaxRuntimeInSeconds was reached", "MaxRuntimeExceeded"
        elif stop.raised:
            reason, outcome.secondary = "the job was asked to stop", "Stopped"
        else:
            failed = next((f for f in feeders if f.error is not None), None)
            if failed is not None:
                reason = f"feeding the '{shown(failed.channel.name)}' channel failed"
                outcome.failure = f"ClientError: {failed.error}"
        if reason and terminated_at is None:
            log.warning("Stopping training: %s (SIGTERM, SIGKILL after %d s)", reason, STOP_GRACE_S)
            train.terminate()
            terminated_at = time.monotonic()
        if terminated_at is not None and time.monotonic() - terminated_at > STOP_GRACE_S:
            log.warning("Training did not exit within %d s of SIGTERM: SIGKILL", STOP_GRACE_S)
            train.kill()
            break
        time.sleep(POLL_S)
    outcome.exit_code = train.wait()


def _judge(outcome: Outcome, root: Path) -> None:
    if outcome.failure:  # the job's own side failed (a Pipe feed)
        outcome.status, outcome.secondary = "Failed", "Failed"
    elif outcome.secondary in ("MaxRuntimeExceeded", "Stopped"):
        outcome.status = "Stopped"
    elif outcome.exit_code == 0:
        outcome.status = "Completed"  # its secondary status moves on through Uploading (``upload_results``)
    else:
        failure = paths.output_dir(root) / "failure"
        reason = failure.read_text().strip() if failure.exists() else "training exited without a failure file"
        outcome.status, outcome.secondary = "Failed", "Failed"
        outcome.failure = f"AlgorithmError: {reason}, exit code: {outcome.exit_code}"


def upload_results(request: JobRequest, root: Path, workdir: Path, outcome: Outcome, level: int) -> None:
    """output.tar.gz always (SageMaker uploads it for failed jobs too); model.tar.gz unless training failed."""
    outcome.secondary = "Uploading" if outcome.status == "Completed" else outcome.secondary
    archives = [(paths.output_data_dir(root), workdir / "output.tar.gz", request.output_uri())]
    if outcome.status != "Failed":
        archives.insert(0, (paths.model_dir(root), workdir / "model.tar.gz", request.model_uri()))
    for directory, archive, target in archives:
        upload_file(package(directory, archive, level), target)
        log.info("Uploaded %s (%.1f MB)", shown(target.uri), archive.stat().st_size / 2**20)
    if outcome.status == "Completed":
        outcome.secondary = "Completed"


def run_job(request: JobRequest, workdir: Path) -> dict:
    """Run ``request`` in ``workdir`` (its /opt/ml, or its hosts' under ``hosts/``); what describe_training_job says."""
    stop = StopFlag().install(signal.SIGTERM, signal.SIGINT)  # StopTrainingJob, or Ctrl-C
    level = gzip_level()  # a bad value is said before anything is downloaded
    if request.training_image:
        ensure_image(request.training_image)
    outcome = Outcome()
    root = workdir.absolute()
    claim(root)
    group = hosts_of(root, request.instance_count)
    if len(group) > 1:
        port = str(free_port_pair())  # one parameter server for the job, on this machine
        request = dataclasses.replace(request, hyperparameters={"_ps_port": port, **request.hyperparameters})
    for host in group:
        prepare(request, host, group)
    root = group[0].root  # the first host's tree holds the job's model and output
    log.info("Job %s in %s", request.name, workdir.absolute())
    outcome.secondary = "Downloading"
    for host in group:
        for channel in request.channels:
            if channel.is_pipe:
                continue
            share = (host.rank, len(group)) if channel.distribution == "ShardedByS3Key" else None
            label = shown(channel.name) if len(group) == 1 else f"{host.name} {shown(channel.name)}"
            download(
                channel.source,
                paths.channel_dir(channel.name, host.root),
                channel_staging(host.root, channel.name),
                label,
                channel.data_type == "ManifestFile",
                share,
            )
    sync = None
    if request.checkpoint_uri:
        sync = CheckpointSync(paths.checkpoints_dir(root), request.checkpoint_uri, root / STAGING / "checkpoints")
        sync.restore()
    feeders = [PipeFeeder(c, paths.data_dir(root)) for c in request.channels if c.is_pipe]
    outcome.secondary = "Training"
    metric_log = MetricLog(request.metric_definitions, workdir / LOG_FILE)
    with start_training(request, group, workdir) as train:
        metric_log.follow(train.stdout)
        for feeder in feeders:
            feeder.start()
        if sync:
            sync.start()
        try:
            supervise(train, request, outcome, feeders, stop)
        finally:
            if train.poll() is None:
                train.kill()
                train.wait()
            for feeder in feeders:
                feeder.stop()
            metric_log.join()  # before the pipe is closed with the process
    outcome.ended = time.time()
    _judge(outcome, root)
    if sync:
        sync.stop()
    upload_results(request, root, workdir, outcome, level)
    outcome.close_transitions()
    timeline = json.dumps(metric_log.timeline, indent=2)
    (workdir / TIMELINE_FILE).write_text(timeline)
    if request.metric_definitions:
        log.info("Metric timeline (%d values): %s", len(metric_log.timeline), workdir / TIMELINE_FILE)
    return describe(request, outcome, metric_log.final())


def main(request_path: Path, workdir: Path | None) -> int:
    """The ``semseg job`` command: 0 when the job completed, 1 otherwise (the description says why)."""
    from .request import load

    request = load(request_path)
    description = run_job(request, workdir or Path("semseg-jobs") / request.name)
    print(json.dumps(description, indent=2), flush=True)
    if description["TrainingJobStatus"] != "Completed":
        raise UserError(
            f"The training job {request.name} is {description['TrainingJobStatus']}"
            + (f": {description['FailureReason']}" if description.get("FailureReason") else "")
        )
    return 0
