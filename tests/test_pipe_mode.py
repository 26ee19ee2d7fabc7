"""Pipe mode through real FIFOs, fed by a separate writer process that frames records as SageMaker does."""

from __future__ import annotations

import functools
import io
import json
import logging
import multiprocessing
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from harness.trainjob import MODEL_FILES, WITH_EXPORT, make_tree, run_train, start_train
from PIL import Image

from semseg import hyperparameters
from semseg.data import pipe_mode
from semseg.data.dataset import PairDataset, ValidationSampler
from semseg.data.file_mode import find_pairs
from semseg.data.label_map import lookup_table
from semseg.data.pipe_feed import feed_channel, pair_stream
from semseg.data.recordio import MAGIC, frame
from semseg.data.transforms import train_transform, validation_transform
from semseg.errors import UserError
from semseg.sample_data import NUM_CLASSES, make_pair, write_opt_ml_tree
from semseg.sm_config import ChannelConfig

FORK = multiprocessing.get_context("fork")
TABLE = lookup_table({"scale": 1}, NUM_CLASSES)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def sample_pairs(count: int, seed: int = 0, size=(64, 48)) -> list[tuple[bytes, bytes]]:
    """(JPEG image, PNG palette mask) pairs of the synthetic dataset, as a manifest would point at."""
    rng = np.random.RandomState(seed)
    pairs = []
    for _ in range(count):
        image, mask = make_pair(rng, *size)
        pairs.append((encode(image, "JPEG"), encode(mask, "PNG")))
    return pairs


def offsets(records: list[bytes]) -> list[int]:
    """Byte offset of each record's header in the stream of ``records``."""
    result, position = [], 0
    for payload in records:
        result.append(position)
        position += len(frame(payload))
    return result


def _epoch_records(streams: list[list[bytes]], epoch: int):
    return (frame(payload) for payload in streams[epoch])


def _epoch_pairs(pairs: list[tuple[bytes, bytes]], epoch: int):
    return pair_stream(pairs)


def _epoch_bytes(streams: list[bytes], epoch: int):
    return [streams[epoch]]


@pytest.fixture
def base_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    (tmp_path / "input" / "data").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def feed(base_dir):
    """Start a writer process that plays SageMaker for one channel; stopped at teardown if still waiting."""
    writers = []

    def start(channel: str, epochs: int, epoch_bytes) -> multiprocessing.Process:
        writer = FORK.Process(target=feed_channel, args=(base_dir / "input" / "data", channel, epochs, epoch_bytes))
        writer.start()
        writers.append(writer)
        return writer

    yield start
    for writer in writers:
        writer.join(timeout=5)
        if writer.is_alive():
            writer.terminate()
            writer.join()


def parse_hp(**values) -> dict:
    return hyperparameters.parse({"num_classes": NUM_CLASSES, "crop_size": 32, "base_size": 48, **values})


def loader(split: str, hp: dict, workers: int = 0, stop_check=pipe_mode.no_stop):
    transform = (
        train_transform(hp["base_size"], hp["crop_size"]) if split == "train" else validation_transform(hp["crop_size"])
    )
    return pipe_mode.pipe_loader(split, hp, pipe_mode.StreamedPairs(transform, TABLE), hp["_seed"], workers, stop_check)


def samples_per_epoch(data_loader, epochs: int) -> list[int]:
    counts = []
    for _ in range(epochs):
        counts.append(sum(images.shape[0] for images, labels in data_loader))
    return counts


def test_trains_over_several_epochs_from_fifos_including_a_multi_part_record(base_dir, feed, caplog):
    pairs = sample_pairs(10)
    # A JPEG ignores bytes after its end marker: put the magic word there at an aligned offset, so
    # that SageMaker's framing splits this record into parts that the reader must join.
    image = pairs[3][0]
    image += b"\0" * (-len(image) % 4) + struct.pack("<I", MAGIC) + b"tail"
    pairs[3] = (image, pairs[3][1])
    assert struct.unpack_from("<I", frame(image), 4)[0] >> 29 == 1  # first part of a multi-part record
    writer = feed("train", 3, functools.partial(_epoch_pairs, pairs))
    hp = parse_hp(num_training_samples=10, mini_batch_size=4, _pipe_shuffle_buffer=4)
    train = loader("train", hp, workers=2)
    assert len(train) == 2
    with caplog.at_level(logging.INFO, logger="semseg"):
        batches = [list(train) for _ in range(3)]
    assert [sum(images.shape[0] for images, _ in epoch) for epoch in batches] == [8, 8, 8]
    images, labels = batches[0][0]
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4, 32, 32)
    assert set(np.unique(labels.asnumpy())) <= {-1, 0, 1, 2, 3}
    writer.join(timeout=10)
    assert writer.exitcode == 0
    assert len(re.findall(r"The train stream of epoch \d .*: 8 image/mask pairs used in 2 batches", caplog.text)) == 3
    assert "holds more than the 8 image/mask pairs that 2 iterations of 4 use" in caplog.text


def test_validation_streams_the_whole_channel_in_order_identical_to_file_mode(base_dir, feed, tmp_path):
    write_opt_ml_tree(tmp_path / "files", train=1, validation=7)
    data = tmp_path / "files" / "input" / "data"
    pairs = find_pairs(data / "validation", data / "validation_annotation")
    feed("validation", 2, functools.partial(_epoch_pairs, [(p.image.read_bytes(), p.mask.read_bytes()) for p in pairs]))
    hp = parse_hp(num_training_samples=1, validation_mini_batch_size=3)
    piped = loader("validation", hp, workers=1)
    first, second = list(piped), list(piped)
    assert [images.shape[0] for images, _ in first] == [3, 3, 1] and len(piped) == 3
    from_files = PairDataset(pairs, validation_transform(hp["crop_size"]), TABLE)
    expected = [[from_files[key] for key in batch] for batch in ValidationSampler(len(pairs), 3)]
    for batches in (first, second):
        for (images, labels), samples in zip(batches, expected):
            np.testing.assert_array_equal(images.asnumpy(), np.stack([s[0] for s in samples]))
            np.testing.assert_array_equal(labels.asnumpy(), np.stack([s[1] for s in samples]))


def test_the_fifo_is_closed_before_the_last_batch_is_handed_out(base_dir, feed):
    """A loop that takes exactly len(loader) batches never asks for more: the FIFO must be closed by
    then, or SageMaker (here the writer) would never start the next epoch's."""
    ((image, mask),) = sample_pairs(1, size=(320, 240))
    assert len(image) > 15_000  # 200 pairs: more than the FIFO, the queue and the shuffle buffer hold
    writer = feed("train", 2, functools.partial(_epoch_pairs, [(image, mask)] * 200))
    train = loader(
        "train", parse_hp(num_training_samples=8, mini_batch_size=4, _pipe_wait_seconds=10, _pipe_shuffle_buffer=1)
    )
    unfinished = [iter(train), iter(train)]  # kept alive: closing must not wait for garbage collection
    for batches in unfinished:
        assert [next(batches)[0].shape[0] for _ in range(len(train))] == [4, 4]
    writer.join(timeout=10)
    assert writer.exitcode == 0


def test_a_shorter_stream_gives_a_shorter_epoch_and_a_warning(base_dir, feed, caplog):
    feed("train", 1, functools.partial(_epoch_pairs, sample_pairs(5)))
    hp = parse_hp(num_training_samples=12, mini_batch_size=2)
    with caplog.at_level(logging.INFO, logger="semseg"):
        assert samples_per_epoch(loader("train", hp), 1) == [4]
    assert (
        "ended after 5 image/mask pairs, fewer than the 12 that 6 iterations of 2 need "
        "(num_training_samples // mini_batch_size): the epoch ran 2 iterations"
    ) in caplog.text


def test_waits_for_the_fifo_and_fails_clearly_after_the_timeout(base_dir):
    hp = parse_hp(num_training_samples=4, mini_batch_size=2, _pipe_wait_seconds=1)
    with pytest.raises(
        UserError,
        match=r"The Pipe-mode input .*/input/data/train_0 did not appear within 1 seconds "
        r"\(the _pipe_wait_seconds hyperparameter\)",
    ):
        list(loader("train", hp))


def test_a_stop_request_ends_the_wait_at_once(base_dir):
    class Stop(Exception):
        pass

    def stop_check():
        raise Stop()

    hp = parse_hp(num_training_samples=4, mini_batch_size=2)  # waits up to 600 s for the FIFO
    with pytest.raises(Stop):
        list(loader("train", hp, stop_check=stop_check))


# Errors name the channel, the epoch, the record's index and its byte offset.


def test_bad_magic_in_a_later_epoch(base_dir, feed):
    good = b"".join(pair_stream(sample_pairs(3)))
    records = [payload for pair in sample_pairs(3) for payload in pair]
    bad = b"".join(frame(p) for p in records[:2]) + b"GARBAGE!" + b"".join(frame(p) for p in records[2:])
    feed("validation", 2, functools.partial(_epoch_bytes, [good, bad]))
    piped = loader("validation", parse_hp(num_training_samples=1, validation_mini_batch_size=2))
    assert sum(images.shape[0] for images, _ in piped) == 3
    with pytest.raises(UserError) as error:
        list(piped)
    assert (
        f"In the 'validation' channel, epoch 1, record 2 at byte offset {offsets(records)[2]} does not start "
        "with the RecordIO magic number 0xCED7230A"
    ) in str(error.value)


def test_truncated_record(base_dir, feed):
    records = [payload for pair in sample_pairs(2) for payload in pair]
    stream = b"".join(frame(p) for p in records)
    feed("validation", 1, functools.partial(_epoch_bytes, [stream[: offsets(records)[3] + 20]]))
    with pytest.raises(
        UserError,
        match=rf"In the 'validation' channel, epoch 0, record 3 at byte offset "
        rf"{offsets(records)[3]} is truncated: the stream ends after 12 of its",
    ):
        list(loader("validation", parse_hp(num_training_samples=1)))


def test_odd_number_of_records(base_dir, feed):
    records = [payload for pair in sample_pairs(2) for payload in pair] + [sample_pairs(1, seed=5)[0][0]]
    feed("validation", 1, functools.partial(_epoch_records, [records]))
    with pytest.raises(
        UserError,
        match=rf"In the 'validation' channel, epoch 0, the stream holds an odd number of "
        rf"records: the last, record 4 \(byte offset {offsets(records)[4]}\), is an "
        r"image without its mask",
    ):
        list(loader("validation", parse_hp(num_training_samples=1)))


def decode_error(feed, records: list[bytes], workers: int = 1) -> str:
    """The error the train loader raises (from a decoding worker process) on this stream."""
    feed("train", 1, functools.partial(_epoch_records, [records]))
    hp = parse_hp(num_training_samples=len(records) // 2, mini_batch_size=1, _pipe_shuffle_buffer=1)
    with pytest.raises(UserError) as error:
        list(loader("train", hp, workers=workers))
    return str(error.value)


def test_payload_that_is_not_an_image(base_dir, feed):
    ((image, mask),) = sample_pairs(1)
    records = [image, mask, b"s3://bucket/images/0001.jpg", mask]
    message = decode_error(feed, records)
    assert (
        f"In the 'train' channel, epoch 0, the image record 2 (byte offset {offsets(records)[2]}) is not an image "
        "(it starts with b's3://bucket/images/0001."
    ) in message
    assert 'RecordWrapperType "RecordIO", AttributeNames ["source-ref", "<label>-ref"]' in message


def test_mask_of_another_size(base_dir, feed):
    ((image, _),) = sample_pairs(1, size=(64, 48))
    ((_, small_mask),) = sample_pairs(1, size=(32, 32))
    records = [image, small_mask]
    assert decode_error(feed, records) == (
        "In the 'train' channel, epoch 0, the mask record 1 (byte offset "
        f"{offsets(records)[1]}) is 32x32 but its image record 0 (byte offset 0) is 64x48; a mask must have "
        "the size of its image"
    )


def test_mask_first_is_recognised(base_dir, feed):
    pairs = sample_pairs(2)
    records = [pairs[0][1], pairs[0][0], pairs[1][1], pairs[1][0]]  # AttributeNames ["label-ref", "source-ref"]
    message = decode_error(feed, records, workers=0)
    assert message.startswith(
        "In the 'train' channel, epoch 0, the mask seems to come before its image: record 0 (byte offset 0) is a PNG "
        f"of mode P and record 1 (byte offset {offsets(records)[1]}) is a JPEG of mode RGB; AttributeNames must list "
        "the image first"
    )


def test_rgb_mask_after_an_rgb_image(base_dir, feed):
    ((image, _),) = sample_pairs(1)
    records = [image, image]
    assert decode_error(feed, records) == (
        f"In the 'train' channel, epoch 0, the mask record 1 (byte offset {offsets(records)[1]}) is a JPEG of mode "
        "RGB; masks must be single-channel 8-bit PNGs (palette 'P' or grayscale 'L') whose pixel values are class ids"
    )


# Channel settings fail fast, saying which SageMaker settings to use.

SETTINGS = (
    'use TrainingInputMode "Pipe", RecordWrapperType "RecordIO", AttributeNames ["source-ref", '
    '"<label>-ref"] (image first, then mask) and ContentType "application/x-recordio"'
)


def pipe(name: str, **settings) -> ChannelConfig:
    return ChannelConfig(name, input_mode="Pipe", **{"record_wrapper": "RecordIO", **settings})


def test_accepted_pipe_settings_mix_with_file_mode_channels(base_dir):
    channels = {
        "train": pipe("train", content_type="application/x-recordio"),
        "validation": pipe("validation", content_type="application/x-image"),
        "label_map": ChannelConfig("label_map"),
        "model": ChannelConfig("model", content_type="application/x-sagemaker-model"),
    }
    assert pipe_mode.check_channels(channels) == {"train", "validation"}
    assert pipe_mode.check_channels({"train": pipe("train"), "validation": ChannelConfig("validation")}) == {"train"}


@pytest.mark.parametrize(
    "channel, expected",
    [
        (
            pipe("train", record_wrapper="None", content_type="application/x-recordio"),
            "The 'train' channel is in Pipe mode with RecordWrapperType None, so images and masks cannot be told "
            f"apart in the stream; {SETTINGS}",
        ),
        (
            pipe("validation", content_type="image/jpeg"),
            "The 'validation' channel is in Pipe mode with ContentType image/jpeg, which this algorithm does not "
            f"read; {SETTINGS}",
        ),
        (
            ChannelConfig("train", content_type="application/x-recordio"),
            "The 'train' channel is in File mode with RecordIO data and has no 'train_annotation' channel; to train "
            f"from an augmented manifest, {SETTINGS}",
        ),
        (
            pipe("label_map"),
            "The 'label_map' channel is in Pipe mode, which only the train and validation channels support; give it "
            'TrainingInputMode "File"',
        ),
    ],
    ids=["no record wrapper", "wrong content type", "augmented manifest in File mode", "label map in Pipe mode"],
)
def test_settings_that_cannot_work_fail_fast(base_dir, channel, expected):
    with pytest.raises(UserError) as error:
        pipe_mode.check_channels({channel.name: channel})
    assert str(error.value) == expected


# Memory: peak RSS of the loader does not grow with the stream's length.

MEMORY_SCRIPT = """
import functools, io, json, multiprocessing, os, resource, sys
import numpy as np
from PIL import Image
from semseg.data.pipe_feed import feed_channel, pair_stream
from test_pipe_mode import loader, parse_hp

records, data_dir = int(sys.argv[1]), sys.argv[2]
rng = np.random.RandomState(0)
distinct = []
for i in range(8):  # noisy 256x256 JPEGs of ~100 kB, so that keeping records would show
    image = Image.fromarray(rng.randint(0, 256, (256, 256, 3), dtype=np.uint8))
    mask = Image.fromarray(rng.randint(0, 4, (256, 256), dtype=np.uint8), "L")
    encoded = []
    for picture, fmt in ((image, "JPEG"), (mask, "PNG")):
        buffer = io.BytesIO(); picture.save(buffer, fmt, quality=95); encoded.append(buffer.getvalue())
    distinct.append(tuple(encoded))
pairs = [distinct[i % 8] for i in range(records // 2)]
stream_bytes = sum(len(image) + len(mask) for image, mask in pairs)

def epoch_bytes(epoch):
    return pair_stream(pairs)

writer = multiprocessing.get_context("fork").Process(target=feed_channel, args=(data_dir, "train", 1, epoch_bytes))
writer.start()
hp = parse_hp(num_training_samples=records // 2, mini_batch_size=10, base_size=64, _pipe_shuffle_buffer=32)
train = loader("train", hp, workers=1)
samples, worker_peak = 0, 0
for images, labels in train:
    samples += images.shape[0]
    for child in multiprocessing.active_children():
        if child.pid != writer.pid:
            status = open(f"/proc/{child.pid}/status").read()
            worker_peak = max(worker_peak, int(status.split("VmHWM:")[1].split()[0]))
writer.join()
main_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"samples": samples, "stream_mb": stream_bytes / 2**20, "main_peak_mb": main_peak / 1024,
                  "worker_peak_mb": worker_peak / 1024}))
"""


def peak_memory(records: int, tmp_path: Path) -> dict:
    data_dir = tmp_path / f"stream-{records}"
    data_dir.mkdir()
    env = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(tmp_path / f"root-{records}"),
        "PYTHONPATH": str(Path(__file__).parent),
    }
    os.makedirs(Path(env["SAGEMAKER_BASE_DIR"]) / "input", exist_ok=True)
    os.symlink(data_dir, Path(env["SAGEMAKER_BASE_DIR"]) / "input" / "data")
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(records), str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_the_stream_length(tmp_path):
    short, long = peak_memory(500, tmp_path), peak_memory(2000, tmp_path)
    assert short["samples"] == 250 and long["samples"] == 1000
    extra_stream = long["stream_mb"] - short["stream_mb"]
    assert extra_stream > 70  # keeping the records would add this much
    # Bounded: the longer stream may not add more than a tenth of its extra bytes to either process.
    assert long["main_peak_mb"] - short["main_peak_mb"] < 0.1 * extra_stream, (short, long)
    assert long["worker_peak_mb"] - short["worker_peak_mb"] < 0.1 * extra_stream, (short, long)


# The `train` command in Pipe mode, as SageMaker runs it.

PIPE_RUN = {  # beyond trainjob.TINY: two epochs of two iterations of 4, every iteration logged
    "epochs": "2",
    "mini_batch_size": "4",
    "num_training_samples": "8",
    "_workers": "1",
    "_logging_frequency": "1",
}
METRIC = r"#quality_metric\. host: algo-1, epoch: (\d+), validation {}: ([0-9.e+-]+) \."


def to_pipe_mode(root: Path, channels: dict[str, str]) -> dict[str, list[tuple[bytes, bytes]]]:
    """Turn the File-mode ``channels`` (split -> ContentType) of ``root`` into Pipe mode; return their pairs."""
    data, config = root / "input" / "data", root / "input" / "config" / "inputdataconfig.json"
    settings = json.loads(config.read_text())
    streams = {}
    for split, content_type in channels.items():
        pairs = find_pairs(data / split, data / f"{split}_annotation")
        streams[split] = [(p.image.read_bytes(), p.mask.read_bytes()) for p in pairs]
        for name in (split, f"{split}_annotation"):
            settings.pop(name)
            for path in (data / name).iterdir():
                path.unlink()
            (data / name).rmdir()
        settings[split] = {
            "TrainingInputMode": "Pipe",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "RecordIO",
            "ContentType": content_type,
        }
    config.write_text(json.dumps(settings))
    return streams


def per_epoch(log: str, pattern: str) -> dict[int, float]:
    return {int(epoch): float(value) for epoch, value in re.findall(pattern, log)}


def iterations_per_epoch(log: str) -> dict[int, int]:
    found = re.findall(r"#progress_notice\. epoch: (\d+), iterations: (\d+) speed: \S+ samples/sec learning_rate", log)
    result: dict[int, int] = {}
    for epoch, iterations in found:
        result[int(epoch)] = max(result.get(int(epoch), 0), int(iterations))
    return result


def start_feeders(root: Path, streams: dict, epochs: int) -> list:
    writers = []
    for split, pairs in streams.items():
        writer = FORK.Process(
            target=feed_channel, args=(root / "input" / "data", split, epochs, functools.partial(_epoch_pairs, pairs))
        )
        writer.start()
        writers.append(writer)
    return writers


def stop_feeders(writers: list) -> list[int | None]:
    """Exit codes of writers that finished; a writer still waiting for an epoch nobody read is stopped (None)."""
    codes = []
    for writer in writers:
        writer.join(timeout=2)
        if writer.is_alive():
            writer.terminate()
            writer.join()
            codes.append(None)
        else:
            codes.append(writer.exitcode)
    return codes


@pytest.fixture(scope="module")
def file_and_pipe_runs(tmp_path_factory):
    """The same synthetic dataset and hyperparameters, trained through File mode and through Pipe mode."""
    file_root = make_tree(tmp_path_factory.mktemp("file"), train=8, validation=4, **PIPE_RUN)
    pipe_root = make_tree(tmp_path_factory.mktemp("pipe"), train=8, validation=4, **PIPE_RUN, **WITH_EXPORT)
    streams = to_pipe_mode(pipe_root, {"train": "application/x-recordio", "validation": "application/x-image"})
    file_run = run_train(file_root)
    writers = start_feeders(pipe_root, streams, epochs=2)
    pipe_run = run_train(pipe_root)
    assert stop_feeders(writers) == [0, 0]
    return file_run, pipe_run


@pytest.mark.slow
def test_pipe_mode_trains_like_file_mode(file_and_pipe_runs):
    file_run, pipe_run = file_and_pipe_runs
    file_log, pipe_log = file_run.log, pipe_run.log
    assert file_run.returncode == 0, file_log[-3000:]
    assert pipe_run.returncode == 0, pipe_log[-3000:]
    assert sorted(p.name for p in file_run.model_dir.iterdir()) == sorted(MODEL_FILES | {"class_pixels.json"})
    # Pipe mode streams the masks without counting them: no class_pixels.json, so no drift gauge when served.
    assert sorted(p.name for p in pipe_run.model_dir.iterdir()) == sorted(MODEL_FILES | {"model.onnx"})
    # The same number of samples per epoch: 2 iterations of 4 in both modes, every validation pair once.
    assert iterations_per_epoch(file_log) == iterations_per_epoch(pipe_log) == {0: 2, 1: 2}
    assert "LRScheduler setup: iters per epoch: 2, num_epochs 2" in pipe_log
    assert len(re.findall(r"The train stream of epoch \d .*: 8 image/mask pairs used in 2 batches", pipe_log)) == 2
    assert len(re.findall(r"The validation stream of epoch \d .*: 4 image/mask pairs used in 1 batches", pipe_log)) == 2
    # The same metrics within 0.1: same initial weights (same seed), same validation samples and
    # preprocessing (bit-identical, see the validation test); only the train draws' order and
    # augmentation seeds differ, through the shuffle buffer, and after two steps those alone move
    # pixel accuracy by up to about 0.05 (measured 0.003 and 0.052 in two code versions).
    for name in ("mIOU", "pixel_accuracy"):
        file_values, pipe_values = per_epoch(file_log, METRIC.format(name)), per_epoch(pipe_log, METRIC.format(name))
        assert file_values.keys() == pipe_values.keys() == {0, 1}
        for epoch in file_values:
            assert abs(file_values[epoch] - pipe_values[epoch]) <= 0.1, (name, file_values, pipe_values)
    report = json.loads((pipe_run.root / "output" / "data" / "metrics.json").read_text())
    assert [entry["epoch"] for entry in report["history"]] == [0, 1]
    # the end of training's score at each image's own size needs the images as files: one line says why not
    assert "native_validation" not in report
    assert (
        "No validation at each image's own size: the training and validation data are not in File mode here "
        "(Pipe mode)" in pipe_log
    )


@pytest.mark.slow
def test_pipe_train_with_file_validation_label_map_incremental_training_early_stopping_and_auto_weights(
    file_and_pipe_runs, tmp_path
):
    """Every File-mode feature around a Pipe-mode train channel: the features are the loop's, not the mode's."""
    _, pipe_run = file_and_pipe_runs
    root = make_tree(
        tmp_path,
        train=8,
        validation=4,
        **{
            **PIPE_RUN,
            "epochs": "4",
            "learning_rate": "0.000001",
            "early_stopping": "True",
            "early_stopping_min_epochs": "1",
            "early_stopping_patience": "1",
            "early_stopping_tolerance": "1",
            "loss": "focal",  # an incremental job may change the loss
            "class_weights": "auto",  # in Pipe mode: counted over the first epoch's stream
        },
    )
    streams = to_pipe_mode(root, {"train": "application/x-recordio"})
    # Masks encoded as class x 10, decoded by the label map channel's train_label_map.json.
    streams["train"] = [
        (image, encode(Image.fromarray(np.asarray(Image.open(io.BytesIO(mask))) * 10, "L"), "PNG"))
        for image, mask in streams["train"]
    ]
    (root / "input" / "data" / "label_map").mkdir()
    (root / "input" / "data" / "label_map" / "train_label_map.json").write_text('{"scale": 10}')
    (root / "input" / "data" / "model").mkdir()
    subprocess.run(
        ["tar", "-czf", str(root / "input" / "data" / "model" / "model.tar.gz"), "-C", str(pipe_run.model_dir), "."],
        check=True,
    )
    writers = start_feeders(root, streams, epochs=4)
    job = run_train(root)
    stop_feeders(writers)
    code, log = job.returncode, job.log
    assert code == 0, log[-3000:]
    assert "#label_map train :{'scale': 10}" in log, log[-3000:]
    assert "Incremental training: initializing all weights from model_best.params" in log
    assert "Early stopping: validation mIOU has not improved for 1 epochs" in log
    assert "Loss: focal, focal_gamma=2, class_weights=auto" in log
    assert "Class weights (auto): 1 for the first epoch, then set from the pixel counts of its stream" in log
    assert len(re.findall(r"Class weights \(auto, from \d+ streamed pixels\): class_0=[0-9.e+-]+, class_1=", log)) == 1
    assert iterations_per_epoch(log) == {0: 2, 1: 2}  # two epochs read from train_0 and train_1, then stopped
    assert re.findall(r"The train stream of epoch (\d)", log) == ["0", "1"]
    losses = [float(v) for v in re.findall(r"epoch: \d+, train loss: ([0-9.e+-]+) \.", log)]
    assert len(losses) == 2 and all(0 < loss < 3 for loss in losses)
    assert (root / "model" / "model_best.params").exists() and (root / "model" / "model_algo-1").exists()


def pipe_tree(root: Path, **hyperparameters) -> Path:
    """A tree whose train and validation channels are in Pipe mode, with no writer: the FIFOs never come."""
    make_tree(root, train=2, validation=2, **{**PIPE_RUN, **hyperparameters})
    to_pipe_mode(root, {"train": "application/x-recordio", "validation": "application/x-recordio"})
    return root


@pytest.mark.slow
def test_the_train_command_fails_with_a_sentence_when_the_fifo_never_appears(tmp_path):
    root = pipe_tree(tmp_path, _pipe_wait_seconds="1")
    job = run_train(root)
    assert job.returncode == 1, job.log[-2000:]
    assert job.failure == (
        f"The Pipe-mode input {root}/input/data/train_0 did not appear within 1 seconds (the "
        "_pipe_wait_seconds hyperparameter); SageMaker creates it when the channel is in Pipe mode"
    )


@pytest.mark.slow
def test_sigterm_while_waiting_for_a_fifo_stops_the_job_promptly(tmp_path):
    root = pipe_tree(tmp_path)  # waits up to 600 s for train_0
    process = start_train(root)
    for line in process.stdout:
        if "LRScheduler setup" in line:  # the next step opens train_0
            break
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    rest = process.stdout.read()
    assert process.wait(timeout=60) == 143 and time.time() - sent < 10, rest
    assert "Received SIGTERM: training stopped before completion" in rest
