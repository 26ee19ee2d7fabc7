"""Two hosts in Pipe mode, each fed its own FIFOs: ``mini_batch_size`` is the global batch as in File
mode, and streams of different lengths end every host's epoch at the same iteration (no hang)."""

from __future__ import annotations

import pytest
from harness.clusterjob import finish, make_cluster, start_host
from harness.ports import free_port
from test_pipe_mode import iterations_per_epoch, start_feeders, stop_feeders, to_pipe_mode


@pytest.mark.slow
def test_two_hosts_in_pipe_mode_share_the_global_batch_and_end_a_short_epoch_together(tmp_path):
    hyperparameters = {
        "epochs": "2",
        "_logging_frequency": "1",
        "mini_batch_size": "4",
        "num_training_samples": "12",
        "validation_mini_batch_size": "2",
    }
    roots = make_cluster(tmp_path / "cluster", free_port(2), **hyperparameters)
    channels = {"train": "application/x-recordio", "validation": "application/x-image"}
    streams = [to_pipe_mode(root, channels) for root in roots]
    # 12 samples of a global batch of 4 are 3 iterations; each host's share is 2 pairs a batch. The
    # first host streams 6 pairs (3 batches), the second only 4 (2 batches), and a shorter validation.
    streams[1] = {"train": streams[1]["train"][:4], "validation": streams[1]["validation"][:2]}
    writers = [start_feeders(root, stream, epochs=2) for root, stream in zip(roots, streams)]
    processes = [start_host(root) for root in roots]
    jobs = [finish(root, process, timeout=600) for root, process in zip(roots, processes)]
    for writer in writers:
        stop_feeders(writer)
    for job in jobs:
        assert job.returncode == 0, job.log[-3000:]
        assert "this host reads batches of 2 pairs from its stream, its share of mini_batch_size 4" in job.log
        assert iterations_per_epoch(job.log) == {0: 2, 1: 2}, job.log[-3000:]
