"""moto's standalone S3-protocol server on 127.0.0.1, for the tests that talk to S3 through boto3.

boto3 is never mocked: the code under test makes real HTTP requests to this server, found through
``AWS_ENDPOINT_URL`` with dummy credentials, exactly as it would reach MinIO or AWS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests

from harness.ports import free_port

MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")
START_TIMEOUT_S = 60  # moto imports every AWS service model it serves: slow on a loaded machine
STOP_TIMEOUT_S = 10


# What a process needs to reach the server and nothing else: no profile or credentials of the machine's.
def aws_environment(endpoint: str, config_dir: Path) -> dict[str, str]:
    (config_dir / "config").write_text("")
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(config_dir / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(config_dir / "config"),
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-role lookup off this machine
    }


@dataclass
class MotoServer:
    endpoint: str
    process: subprocess.Popen

    def new_bucket(self) -> str:
        import boto3

        name = f"test-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return name


def start(log_path: Path) -> MotoServer:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            requests.get(f"{endpoint}/moto-api/", timeout=2)
            return MotoServer(endpoint, process)
        except requests.RequestException:
            time.sleep(0.2)
    stop(MotoServer(endpoint, process))
    raise RuntimeError(f"moto_server did not answer within {START_TIMEOUT_S} s")


def stop(server: MotoServer) -> None:
    """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
    server.process.terminate()
    try:
        server.process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def env_for(server: MotoServer, config_dir: Path) -> dict[str, str]:
    return {**os.environ, **aws_environment(server.endpoint, config_dir)}
