"""``semseg job``: CreateTrainingJob requests run locally with S3 channels on a real S3-protocol server.

One tiny File-mode job (crop 32, one epoch of two iterations) runs once for the module; a second
job continues it through both of SageMaker's ways (model channel, restored checkpoints); a Pipe-mode
job streams an augmented manifest from S3 over three epochs; a job given too little MaxRuntimeInSeconds
is stopped. Learning quality is not the point here.
"""

from __future__ import annotations

import gzip
import json
import re
import time
import uuid
from pathlib import Path

import boto3
import pytest
from harness.s3jobs import (
    CHANNELS,
    content_type,
    file_channel,
    file_mode_channels,
    keys,
    request,
    run_job,
    sdk_built,
    tar_members,
    upload_dataset,
)
from harness.trainjob import MODEL_FILES
from test_pipe_mode import sample_pairs

from semseg import logs
from semseg.sample_data import write_opt_ml_tree

pytestmark = pytest.mark.slow

MAX_RUNTIME_S = 15
BUILTIN_IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/semantic-segmentation:1"
STOP_BOUND_S = 100  # start-up, the stop at the next step and packing, on a loaded machine


def test_a_file_mode_job_leaves_model_and_output_archives_at_sagemakers_keys(s3_first_job):
    bucket, body, job = s3_first_job
    assert job.returncode == 0, job.log[-3000:]
    assert job.description["TrainingJobStatus"] == "Completed"
    assert job.description["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/jobs/first/output/model.tar.gz"
    assert keys(bucket, "jobs/") == ["jobs/first/output/model.tar.gz", "jobs/first/output/output.tar.gz"]
    model = tar_members(bucket, "jobs/first/output/model.tar.gz")
    assert MODEL_FILES <= set(model)
    assert json.loads(model["hyperparams.json"])["crop_size"] == "32"
    # the configuration SageMaker writes, and the ignored fields named once each
    config = job.workdir / "input" / "config"
    assert json.loads((config / "inputdataconfig.json").read_text())["train"]["TrainingInputMode"] == "File"
    assert json.loads((config / "hyperparameters.json").read_text())["epochs"] == "1"
    assert body["AlgorithmSpecification"]["TrainingImage"] == BUILTIN_IMAGE  # sagemaker.image_uris.retrieve's
    assert f"TrainingImage {BUILTIN_IMAGE} is SageMaker's built-in Semantic Segmentation image" in job.log
    assert "Ignoring DebugHookConfig: it does not apply" in job.log  # the SDK's extras
    assert "Ignoring ProfilerConfig: it does not apply" in job.log
    assert "Ignoring RoleArn: it does not apply" in job.log
    assert "Ignoring ResourceConfig.InstanceType: it does not apply" in job.log
    assert sorted(p.name for p in (job.workdir / "input" / "data" / "train").iterdir()) == [
        f"000{i}.jpg" for i in range(4)
    ]


def test_final_metrics_are_the_last_values_the_definitions_find_in_the_log(s3_first_job):
    _, body, job = s3_first_job
    log = (job.workdir / "training.log").read_text()
    assert "MetricDefinitions" not in body["AlgorithmSpecification"]  # the SDK sends none for the built-in's image:
    definitions = [{"Name": name, "Regex": regex} for name, regex in logs.METRIC_REGEXES.items()]  # its own apply
    expected = {d["Name"]: float(re.findall(d["Regex"], log)[-1]) for d in definitions}
    assert set(expected) == {"validation:mIOU", "validation:pixel_accuracy", "train:loss"}
    final = {entry["MetricName"]: entry["Value"] for entry in job.description["FinalMetricDataList"]}
    assert final == expected
    timeline = json.loads((job.workdir / "metric_timeline.json").read_text())
    assert [entry["MetricName"] for entry in timeline] == [
        name for line in log.splitlines() for d in definitions if re.search(d["Regex"], line) for name in [d["Name"]]
    ]
    transitions = job.description["SecondaryStatusTransitions"]
    assert [t["Status"] for t in transitions] == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all(t["StartTime"] <= t["EndTime"] for t in transitions)
    assert "#quality_metric. host: algo-1, epoch: 0, validation mIOU:" in job.log  # passed on as it was logged


def test_a_manifest_file_channel_downloads_the_keys_it_lists(aws_env, moto_server, tmp_path):
    """ManifestFile channels (a JSON array of a prefix and keys), in the request the SDK builds."""
    bucket = moto_server.new_bucket()
    upload_dataset(bucket, "listed", tmp_path / "dataset", train=5, validation=2)
    channels = {}
    for channel in CHANNELS:
        names = sorted(key.rsplit("/", 1)[1] for key in keys(bucket, f"listed/{channel}/"))
        listed = names[:4] if channel.startswith("train") else names  # the fifth training pair is left out
        manifest = [{"prefix": f"s3://{bucket}/listed/{channel}/"}, *listed]
        boto3.client("s3").put_object(Bucket=bucket, Key=f"manifests/{channel}.json", Body=json.dumps(manifest))
        uri = f"s3://{bucket}/manifests/{channel}.json"
        channels[channel] = {"s3_data": uri, "s3_data_type": "ManifestFile", "content_type": content_type(channel)}
    body = sdk_built("listed", bucket, channels, aws_env, tmp_path)
    assert {c["DataSource"]["S3DataSource"]["S3DataType"] for c in body["InputDataConfig"]} == {"ManifestFile"}

    job = run_job(body, tmp_path / "listed", aws_env)

    assert job.returncode == 0, job.log[-3000:]
    assert job.description["TrainingJobStatus"] == "Completed"
    assert sorted(p.name for p in (job.workdir / "input" / "data" / "train").iterdir()) == [
        f"000{i}.jpg" for i in range(4)
    ]
    assert "train: 4 image/mask pairs" in job.log
    assert "jobs/listed/output/model.tar.gz" in keys(bucket, "jobs/listed/")


def test_two_instances_each_train_on_their_share_of_a_sharded_channel(aws_env, moto_server, tmp_path):
    """InstanceCount 2 from the SDK's Estimator: two hosts on this machine, ShardedByS3Key training channels."""
    bucket = moto_server.new_bucket()
    upload_dataset(bucket, "shared", tmp_path / "dataset", train=6, validation=2)
    channels = {}
    for channel in CHANNELS:
        sharded = {"distribution": "ShardedByS3Key"} if channel.startswith("train") else {}
        channels[channel] = {"s3_data": f"s3://{bucket}/shared/{channel}", "content_type": content_type(channel)}
        channels[channel].update(sharded)
    body = sdk_built("pair", bucket, channels, aws_env, tmp_path, instance_count=2)
    assert body["ResourceConfig"]["InstanceCount"] == 2

    job = run_job(body, tmp_path / "pair", aws_env)

    assert job.returncode == 0, job.log[-3000:]
    assert job.description["TrainingJobStatus"] == "Completed"
    every = [f"000{i}.jpg" for i in range(6)]
    for rank, host in enumerate(("algo-1", "algo-2")):
        assert f"{host} train: this host's share, 3 of the 6 objects (ShardedByS3Key)" in job.log
        data = job.workdir / "hosts" / host / "input" / "data"
        assert sorted(p.name for p in (data / "train").iterdir()) == every[rank::2]
        assert len(list((data / "validation").iterdir())) == 2  # FullyReplicated: every host has it all
    second = (job.workdir / "training-algo-2.log").read_text()
    assert "train: 3 image/mask pairs" in second and "Model artifacts are written by the first host, algo-1" in second
    assert "train: 3 image/mask pairs" in job.log  # the first host's log is the job's
    assert not (job.workdir / "hosts" / "algo-2" / "model" / "model_best.params").exists()
    assert keys(bucket, "jobs/pair/") == ["jobs/pair/output/model.tar.gz", "jobs/pair/output/output.tar.gz"]
    assert MODEL_FILES <= set(tar_members(bucket, "jobs/pair/output/model.tar.gz"))


def test_a_second_job_restores_the_synced_checkpoints_and_reads_the_model_channel(s3_first_job, aws_env, tmp_path):
    bucket, body, first = s3_first_job
    assert first.returncode == 0, first.log[-3000:]
    synced = keys(bucket, "checkpoints/run/")
    assert any(key.endswith("/MANIFEST.json") for key in synced), synced
    model_uri = first.description["ModelArtifacts"]["S3ModelArtifacts"]
    channels = file_mode_channels(bucket, "data") + [file_channel("model", model_uri)]
    second_body = {**request("second", bucket, channels, checkpoints=f"s3://{bucket}/checkpoints/run", epochs=2)}

    second = run_job(second_body, tmp_path / "second", aws_env)

    assert second.returncode == 0, second.log[-3000:]
    assert "Incremental training: initializing all weights from model_best.params" in second.log
    assert re.search(r"Resuming from checkpoint \S+algo-1-00001-0000000: epoch 1, after 0 of its 2", second.log)
    epochs = re.findall(r"#quality_metric\. host: algo-1, epoch: (\d+), validation mIOU", second.log)
    assert epochs == ["1"]  # only the epoch the first job had not trained
    assert any("algo-1-00002" in key for key in keys(bucket, "checkpoints/run/"))  # synced during the second job
    assert "jobs/second/output/model.tar.gz" in keys(bucket, "jobs/second/")


def _manifest(bucket: str, prefix: str, pairs, gzipped: bool = False) -> str:
    s3 = boto3.client("s3")
    lines = []
    for index, (image, mask) in enumerate(pairs):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/images/{index}.jpg", Body=image)
        s3.put_object(Bucket=bucket, Key=f"{prefix}/masks/{index}.png", Body=mask)
        ref = f"s3://{bucket}/{prefix}"
        lines.append(json.dumps({"source-ref": f"{ref}/images/{index}.jpg", "label-ref": f"{ref}/masks/{index}.png"}))
    body, name = "\n".join(lines).encode(), "manifest.jsonl.gz" if gzipped else "manifest.jsonl"
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=gzip.compress(body) if gzipped else body)
    return f"s3://{bucket}/{prefix}/{name}"


def test_a_pipe_mode_job_streams_an_s3_augmented_manifest_over_several_epochs(aws_env, moto_server, tmp_path):
    """The request as the SageMaker SDK builds it for the built-in's image, with Pipe-mode TrainingInputs."""
    bucket = moto_server.new_bucket()
    train = _manifest(bucket, "pipe/train", sample_pairs(4, seed=1))
    validation = _manifest(bucket, "pipe/validation", sample_pairs(2, seed=2), gzipped=True)
    piped = {
        "s3_data_type": "AugmentedManifestFile",
        "attribute_names": ["source-ref", "label-ref"],
        "input_mode": "Pipe",
        "record_wrapping": "RecordIO",
        "content_type": "application/x-recordio",
    }
    channels = {
        "train": {"s3_data": train, **piped, "shuffle_seed": 7},
        "validation": {"s3_data": validation, **piped, "compression": "Gzip"},  # a gzipped manifest
    }
    body = sdk_built("piped", bucket, channels, aws_env, tmp_path, epochs=3, input_mode="Pipe")
    assert body["InputDataConfig"][0]["ShuffleConfig"] == {"Seed": 7}
    assert body["InputDataConfig"][1]["CompressionType"] == "Gzip"

    job = run_job(body, tmp_path / "piped", aws_env)

    assert job.returncode == 0, job.log[-3000:]
    assert len(re.findall(logs.METRIC_REGEXES["validation:mIOU"], job.log)) == 3
    config = json.loads((job.workdir / "input" / "config" / "inputdataconfig.json").read_text())
    assert config["train"] == {
        "TrainingInputMode": "Pipe",
        "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "RecordIO",
        "ContentType": "application/x-recordio",
    }
    assert not (job.workdir / "input" / "data" / "train").is_dir()  # streamed, never staged
    assert "jobs/piped/output/model.tar.gz" in keys(bucket, "jobs/piped/")


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        ({"TrainingJobName": "bad_name"}, "TrainingJobName 'bad_name' is not a valid name"),
        ({"OutputDataConfig": {}}, "OutputDataConfig.S3OutputPath is required"),
        (
            {"InputDataConfig": [file_channel("train", "s3://no-such-bucket-x/train/")]},
            "Could not list s3://no-such-bucket-x/train/: the bucket does not exist",
        ),
    ],
)
def test_a_bad_request_fails_in_one_sentence_before_training(aws_env, moto_server, tmp_path, change, sentence):
    bucket = moto_server.new_bucket()
    body = {**request("bad", bucket, []), **change}
    job = run_job(body, tmp_path / "bad", aws_env, timeout=120)
    assert job.returncode == 1
    assert sentence in job.log
    assert "Number of GPUs" not in job.log  # training never started
    assert keys(bucket, "") == []


def _processes_with(variable: str) -> list[int]:
    """Process ids whose environment holds ``variable`` (set on one job only, so they are its processes)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and variable.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


def test_a_job_over_max_runtime_is_stopped_promptly_and_leaves_no_process(aws_env, tmp_path):
    """File channels and output keep this to the stopping itself; epochs=500 cannot end in the time given."""
    data = write_opt_ml_tree(tmp_path / "dataset", train=4, validation=2) / "input" / "data"
    channels = [file_channel(name, (data / name).as_uri()) for name in CHANNELS]
    body = request("too-long", "unused", channels, epochs=500)
    body["OutputDataConfig"] = {"S3OutputPath": (tmp_path / "out").as_uri()}
    body["StoppingCondition"] = {"MaxRuntimeInSeconds": MAX_RUNTIME_S}
    marker = f"SEMSEG_TEST_JOB={uuid.uuid4().hex}"
    body["Environment"] = dict([marker.split("=")])
    started = time.monotonic()

    job = run_job(body, tmp_path / "too-long", aws_env)

    seconds = time.monotonic() - started
    assert job.returncode == 1, job.log[-3000:]
    assert job.description["TrainingJobStatus"] == "Stopped", job.description
    assert job.description["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert "Stopping training: MaxRuntimeInSeconds was reached" in job.log
    assert "did not exit within" not in job.log  # SIGTERM was enough: no SIGKILL
    assert seconds < MAX_RUNTIME_S + STOP_BOUND_S, f"{seconds:.0f} s"
    assert (tmp_path / "out" / "too-long" / "output" / "output.tar.gz").is_file()
    assert _processes_with(marker) == []
