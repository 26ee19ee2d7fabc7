"""Multi-host training: two "hosts" as separate ``train`` processes on 127.0.0.1, each with its own
/opt/ml tree, against one host with two devices; and failures that must end every host."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import save_mask
from harness.clusterjob import finish, make_cluster, start_host
from harness.ports import free_port
from harness.trainjob import WITH_EXPORT, make_tree, quality, run_train

from semseg.data.dataset import EpochSampler, WorkerBatches
from semseg.errors import UserError
from semseg.train import distributed


def test_host_addresses_come_from_the_override(monkeypatch):
    monkeypatch.setenv("SEMSEG_HOST_ADDRESSES", "algo-1=127.0.0.1, algo-2=127.0.0.2")
    assert distributed.resolve("algo-2") == "127.0.0.2"
    monkeypatch.setenv("SEMSEG_HOST_ADDRESSES", "algo-1")
    with pytest.raises(UserError, match="SEMSEG_HOST_ADDRESSES must look like"):
        distributed.resolve("algo-1")


def test_workers_share_each_global_batch_and_resume_mid_epoch():
    def batches(rank: int, size: int, epochs: int, resume_at: int = 0) -> list:
        worker = WorkerBatches(EpochSampler(10, 4, 3, seed=7), rank, size)
        drawn = []
        for epoch in range(epochs):
            if epoch == epochs - 1 and resume_at:
                worker.resume_at(resume_at)
            drawn.append(list(worker))
        return drawn

    one_host = batches(0, 1, 2)
    first, second = batches(0, 2, 2), batches(1, 2, 2)
    for epoch in range(2):
        for whole, a, b in zip(one_host[epoch], first[epoch], second[epoch]):
            assert sorted(a + b) == sorted(whole) and not set(a) & set(b)
    # An epoch resumed after 2 of its 3 batches yields the third, as drawn in one go.
    assert batches(0, 1, 2, resume_at=2)[1] == one_host[1][2:]


@pytest.mark.slow
def test_two_hosts_train_like_one_host_with_two_devices(tmp_path):
    hyperparameters = {"epochs": "2", "_logging_frequency": "1", **WITH_EXPORT}  # the first host exports too
    roots = make_cluster(tmp_path / "cluster", free_port(2), **hyperparameters)
    processes = [start_host(root) for root in roots]
    first, second = [finish(root, process, timeout=400) for root, process in zip(roots, processes)]
    assert first.returncode == 0, first.log[-3000:]
    assert second.returncode == 0, second.log[-3000:]
    assert "All 2 hosts joined: this is algo-2, rank 1" in second.log

    # Only the first host writes the model; every host logs its metrics under its own name.
    assert sorted(p.name for p in first.model_dir.iterdir()) == [
        "class_pixels.json",
        "hyperparams.json",
        "model.onnx",
        "model_algo-1",
        "model_best.params",
    ]
    assert list(second.model_dir.iterdir()) == []
    assert "Model artifacts are written by the first host, algo-1" in second.log
    for job, host in ((first, "algo-1"), (second, "algo-2")):
        assert len(re.findall(rf"#quality_metric\. host: {host}, epoch: \d+, validation mIOU", job.log)) == 2

    # Both workers end with the same weights (their last checkpoints, byte for byte).
    last = [
        root / "checkpoints" / f"{host}-00002-0000000" / "weights.params"
        for root, host in zip(roots, ("algo-1", "algo-2"))
    ]
    assert last[0].read_bytes() == last[1].read_bytes()

    # One host with two devices and the same global batch splits each batch the same way. Each
    # host logs the loss of its own half, so their mean is the comparable figure. The tolerance
    # covers dropout: MXNet's CPU contexts draw from one shared generator in whatever order their
    # threads run, so CPU stand-ins for GPUs never reproduce another run's dropout masks.
    single_root = make_tree(tmp_path / "single", checkpoints=True, **hyperparameters)
    single = run_train(single_root, env={"SEMSEG_CPU_CONTEXTS": "2"})
    assert single.returncode == 0, single.log[-3000:]
    hosts = [quality(first.log), quality(second.log)]
    mean_loss = np.mean([h["train:loss"] for h in hosts], axis=0)
    assert mean_loss == pytest.approx(quality(single.log)["train:loss"], rel=0.15)
    for name in ("validation:mIOU", "validation:pixel_accuracy"):
        assert hosts[0][name] == hosts[1][name]
        assert hosts[0][name] == pytest.approx(quality(single.log)[name], abs=0.1)


def processes_of(root: Path) -> list[int]:
    """Live processes whose environment names this /opt/ml root (a host's train, server, scheduler)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(root).encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_killed_host_fails_the_job_on_every_host(tmp_path):
    roots = make_cluster(tmp_path, free_port(2), epochs="50", _logging_frequency="1")
    processes = [start_host(root) for root in roots]
    deadline = time.time() + 300
    while "#progress_notice. epoch: 0, iterations: 1" not in (roots[1] / "train.log").read_text():
        assert time.time() < deadline and processes[1].poll() is None, (roots[1] / "train.log").read_text()[-2000:]
        time.sleep(0.5)
    processes[1].send_signal(signal.SIGKILL)
    killed = time.time()
    first = finish(roots[0], processes[0], timeout=120)
    assert first.returncode == 1 and time.time() - killed < 60, first.log[-2000:]
    assert first.failure.startswith("Host algo-2 stopped responding or exited without a word"), first.failure
    time.sleep(1)  # the kernel delivers the parent-death signal to the dead host's server
    assert processes_of(roots[1]) == [] and processes_of(roots[0]) == []


@pytest.mark.slow
def test_a_host_with_bad_data_fails_the_job_on_every_host(tmp_path):
    roots = make_cluster(tmp_path, free_port(2))
    save_mask(roots[1] / "input" / "data" / "train_annotation" / "0001.png", np.zeros((10, 10)))
    processes = [start_host(root) for root in roots]
    first, second = [finish(root, process, timeout=300) for root, process in zip(roots, processes)]
    assert second.returncode == 1 and "a mask must have the size of its image" in second.failure
    assert first.returncode == 1, first.log[-2000:]
    assert first.failure.startswith("Host algo-2 failed: ") and "a mask must have the size" in first.failure
    assert os.path.getsize(first.root / "output" / "failure") <= 1025
