"""S3 transfer speed of local jobs, against moto's standalone server on 127.0.0.1.

1. File mode: ``jobs.transfer.download`` of a prefix (parallel transfer manager) against downloading
   the same objects one after another with boto3's ``download_file`` (what a plain sequential copy
   does); the ratio is what matters, both run in this one process against one server.
2. Pipe mode: one epoch of an augmented manifest fed through a real FIFO (RecordIO framing, objects
   fetched ahead in parallel) and read to /dev/null, against reading the same objects with
   ``get_object`` one by one into /dev/null.

    .venv/bin/python bench/s3_transfer.py --objects 200 --kb 256
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import s3server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--kb", type=int, default=256, help="size of each object")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="s3bench-"))
    server = s3server.start(scratch / "moto.log")
    try:
        os.environ.update(s3server.aws_environment(server.endpoint, scratch))
        run(server, scratch, args.objects, args.kb * 1024)
    finally:
        s3server.stop(server)
        shutil.rmtree(scratch, ignore_errors=True)


def run(server, scratch: Path, count: int, size: int) -> None:
    import boto3

    from semseg.jobs import transfer
    from semseg.jobs.pipe_source import PipeFeeder
    from semseg.jobs.request import Channel
    from semseg.jobs.s3 import client, parse_uri

    bucket = server.new_bucket()
    s3 = boto3.client("s3")
    lines = []
    for i in range(count):
        s3.put_object(Bucket=bucket, Key=f"data/{i:05d}.bin", Body=os.urandom(size))
        lines.append(json.dumps({"source-ref": f"s3://{bucket}/data/{i:05d}.bin"}))
    s3.put_object(Bucket=bucket, Key="manifest.jsonl", Body="\n".join(lines).encode())
    total_mb = count * size / 2**20

    started = time.monotonic()
    sequential = scratch / "sequential"
    sequential.mkdir()
    for i in range(count):
        client().download_file(bucket, f"data/{i:05d}.bin", str(sequential / f"{i:05d}.bin"))
    sequential_s = time.monotonic() - started
    parallel = transfer.download(parse_uri(f"s3://{bucket}/data/"), scratch / "parallel", scratch / "staging")
    print(f"File mode, {count} objects x {size // 1024} KiB ({total_mb:.0f} MiB), moto on 127.0.0.1")
    print(f"  sequential boto3 download_file : {total_mb / sequential_s:8.1f} MiB/s")
    print(f"  jobs.transfer.download         : {parallel.mb_per_s:8.1f} MiB/s")
    print(f"  ratio                          : {parallel.mb_per_s / (total_mb / sequential_s):8.2f}x")

    started = time.monotonic()
    with open(os.devnull, "wb") as sink:
        for i in range(count):
            sink.write(client().get_object(Bucket=bucket, Key=f"data/{i:05d}.bin")["Body"].read())
    plain_s = time.monotonic() - started
    channel = Channel(
        "train",
        parse_uri(f"s3://{bucket}/manifest.jsonl"),
        data_type="AugmentedManifestFile",
        input_mode="Pipe",
        attribute_names=("source-ref",),
        record_wrapper="RecordIO",
    )
    data_dir = scratch / "pipes"
    data_dir.mkdir()
    feeder = PipeFeeder(channel, data_dir)

    def drain() -> None:
        path = data_dir / "train_0"
        while not path.exists():
            time.sleep(0.01)
        with open(path, "rb") as fifo, open(os.devnull, "wb") as sink:
            shutil.copyfileobj(fifo, sink, 1 << 20)

    reader = threading.Thread(target=drain)
    reader.start()
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        feeder.feed_epoch(0, pool)
    reader.join()
    feed_s = time.monotonic() - started
    print("Pipe mode, one epoch of the same objects from an augmented manifest")
    print(f"  get_object one by one to /dev/null : {total_mb / plain_s:8.1f} MiB/s")
    print(f"  PipeFeeder through a FIFO          : {feeder.bytes_fed / 2**20 / feed_s:8.1f} MiB/s (RecordIO-framed)")
    print(f"  ratio                              : {plain_s / feed_s:8.2f}x")


if __name__ == "__main__":
    main()
