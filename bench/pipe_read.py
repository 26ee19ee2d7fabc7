"""Pipe-mode input speed: reading RecordIO from a FIFO against ``cat``, and records/s through decoding.

Method: a stream of RecordIO-framed [JPEG image, PNG mask] pairs (synthetic 480x360 images of
semseg.sample_data, cycled) is written into a fresh FIFO by a separate writer process, from memory,
in 1 MiB writes, as SageMaker does. Reading: each round times ``cat FIFO > /dev/null``, the bare
record reader (``read_records``) and the epoch reader thread (records, pairs, shuffle buffer,
queue), alternating, over ``--megabytes`` of stream; the table gives the median MB/s of
``--rounds`` rounds and its ratio to cat's (target: at least 0.8), and the reader's own CPU seconds
per GB, which a busy machine disturbs less than wall time. Decoding: the Pipe-mode train
loader (decode, augment at crop 240 / base 520, batch) against the File-mode loader over the same
images on disk, with 0..N loader workers; records/s counts both records of a pair.

    .venv/bin/python bench/pipe_read.py [--megabytes 256] [--rounds 3] [--pairs 96]
"""

from __future__ import annotations

import argparse
import functools
import io
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

FORK = multiprocessing.get_context("fork")


def sample_pairs(count: int) -> list[tuple[bytes, bytes]]:
    from semseg.sample_data import make_pair

    rng = np.random.RandomState(0)
    pairs = []
    for _ in range(count):
        image, mask = make_pair(rng, 480, 360)
        encoded = []
        for picture, fmt in ((image, "JPEG"), (mask, "PNG")):
            buffer = io.BytesIO()
            picture.save(buffer, fmt, quality=90)
            encoded.append(buffer.getvalue())
        pairs.append(tuple(encoded))
    return pairs


def _one_epoch(data: bytes, epoch: int):
    return [data]


def start_writer(data_dir: Path, channel: str, data: bytes):
    """A process feeding ``data`` as epoch 0 of ``channel``, and the FIFO it feeds."""
    from semseg import paths
    from semseg.data.pipe_feed import feed_channel

    writer = FORK.Process(target=feed_channel, args=(data_dir, channel, 1, functools.partial(_one_epoch, data)))
    writer.start()
    return writer, data_dir / paths.pipe_name(channel, 0)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_cat(data_dir: Path, data: bytes) -> tuple[float, float]:
    writer, fifo = start_writer(data_dir, "cat", data)
    while not fifo.exists():
        time.sleep(0.001)
    start, cpu = time.perf_counter(), children_cpu()
    subprocess.run(["cat", str(fifo)], stdout=subprocess.DEVNULL, check=True)
    seconds, cpu = time.perf_counter() - start, children_cpu() - cpu  # the writer is not reaped yet
    writer.join()
    return seconds, cpu


def time_reader(data_dir: Path, data: bytes) -> tuple[float, float]:
    from semseg.data.pipe_stream import READ_BUFFER
    from semseg.data.recordio import read_records

    writer, fifo = start_writer(data_dir, "reader", data)
    while not fifo.exists():
        time.sleep(0.001)
    start, cpu = time.perf_counter(), time.process_time()
    with open(fifo, "rb", buffering=READ_BUFFER) as stream:
        total = sum(len(record.payload) for record in read_records(stream))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    writer.join()
    assert total > 0
    return seconds, cpu


def time_epoch_stream(data_dir: Path, data: bytes) -> tuple[float, float]:
    from semseg.data.batch_loader import no_stop
    from semseg.data.pipe_stream import EpochStream, StreamSettings

    writer, _ = start_writer(data_dir, "train", data)
    start, cpu = time.perf_counter(), time.process_time()
    stream = EpochStream("train", 0, StreamSettings(wait_seconds=60, shuffle_buffer=256, seed=0))
    pairs = sum(1 for _ in stream.pairs(no_stop))
    stream.close(no_stop)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    writer.join()
    assert pairs == stream.pairs_read > 0
    return seconds, cpu


def reading_table(pairs: list[tuple[bytes, bytes]], megabytes: int, rounds: int) -> None:
    from semseg.data.pipe_feed import pair_stream

    one_pass = b"".join(pair_stream(pairs))
    data = one_pass * max(1, round(megabytes * 1e6 / len(one_pass)))
    methods = {
        "cat FIFO > /dev/null": time_cat,
        "read_records (bare reader)": time_reader,
        "EpochStream (thread, pairs, shuffle)": time_epoch_stream,
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, method in methods.items():
            with tempfile.TemporaryDirectory() as scratch:
                os.environ["SAGEMAKER_BASE_DIR"] = scratch
                data_dir = Path(scratch) / "input" / "data"
                data_dir.mkdir(parents=True)
                times[name].append(method(data_dir, data))
    speeds = {name: len(data) / 1e6 / statistics.median(t for t, _ in values) for name, values in times.items()}
    cpu = {name: statistics.median(c for _, c in values) / (len(data) / 1e9) for name, values in times.items()}
    cat = speeds["cat FIFO > /dev/null"]
    records = len(data) // len(one_pass) * 2 * len(pairs)
    print(
        f"\nReading a FIFO: {len(data) / 1e6:.0f} MB, {records} records of {len(one_pass) / 2 / len(pairs) / 1e3:.1f} "
        f"kB on average, median of {rounds} rounds; CPU s/GB is the reader's own CPU time (not the writer's)"
    )
    print(f"{'method':40s} {'MB/s':>9s} {'records/s':>11s} {'x cat':>7s} {'CPU s/GB':>9s}")
    for name, speed in speeds.items():
        print(f"{name:40s} {speed:9.0f} {speed * 1e6 / len(data) * records:11.0f} {speed / cat:7.2f} {cpu[name]:9.2f}")


def decoding_table(pairs: list[tuple[bytes, bytes]], workers_list: list[int]) -> None:
    from semseg import hyperparameters
    from semseg.data import label_map, pipe_mode
    from semseg.data.batch_loader import BatchLoader
    from semseg.data.dataset import EpochSampler, PairDataset
    from semseg.data.file_mode import Sample
    from semseg.data.pipe_feed import pair_stream
    from semseg.data.transforms import train_transform

    hp = hyperparameters.parse({"num_classes": 4, "num_training_samples": len(pairs), "mini_batch_size": 8})
    table = label_map.lookup_table({"scale": 1}, 4)
    transform = train_transform(hp["base_size"], hp["crop_size"])
    iterations = len(pairs) // hp["mini_batch_size"]
    print(
        f"\nDecoding and augmenting {iterations * hp['mini_batch_size']} pairs (480x360 JPEG + PNG) at crop "
        f"{hp['crop_size']}, base {hp['base_size']}, batch {hp['mini_batch_size']}"
    )
    print(f"{'loader':28s} {'workers':>7s} {'records/s':>10s} {'x File mode':>12s}")
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["SAGEMAKER_BASE_DIR"] = scratch
        data_dir = Path(scratch) / "input" / "data"
        data_dir.mkdir(parents=True)
        samples = []
        for i, (image, mask) in enumerate(pairs):
            (data_dir / f"{i}.jpg").write_bytes(image)
            (data_dir / f"{i}.png").write_bytes(mask)
            samples.append(Sample(data_dir / f"{i}.jpg", data_dir / f"{i}.png"))
        for workers in workers_list:
            sampler = EpochSampler(len(samples), hp["mini_batch_size"], iterations, seed=0)
            with BatchLoader(PairDataset(samples, transform, table), sampler, workers) as file_loader:
                start = time.perf_counter()
                count = sum(images.shape[0] for images, _ in file_loader)
                file_rate = 2 * count / (time.perf_counter() - start)
            writer, fifo = start_writer(data_dir, "train", b"".join(pair_stream(pairs)))
            with pipe_mode.pipe_loader(
                "train", hp, pipe_mode.StreamedPairs(transform, table), 0, workers
            ) as pipe_loader:
                start = time.perf_counter()
                count = sum(images.shape[0] for images, _ in pipe_loader)
                pipe_rate = 2 * count / (time.perf_counter() - start)
            writer.join()
            os.unlink(fifo)
            print(f"{'File mode (PairDataset)':28s} {workers:7d} {file_rate:10.1f} {1.0:12.2f}")
            print(f"{'Pipe mode (StreamedPairs)':28s} {workers:7d} {pipe_rate:10.1f} {pipe_rate / file_rate:12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=256, help="stream size for the reading table")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=96, help="pairs decoded per loader in the decoding table")
    parser.add_argument("--workers", default=f"0,{os.cpu_count() or 1}", help="loader worker counts to try")
    args = parser.parse_args()

    from semseg.logs import setup_logging

    setup_logging(level=40)
    print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    pairs = sample_pairs(args.pairs)
    reading_table(pairs, args.megabytes, args.rounds)
    decoding_table(pairs, [int(w) for w in args.workers.split(",")])


if __name__ == "__main__":
    main()
