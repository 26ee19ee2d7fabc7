"""CreateTrainingJob requests built by the SageMaker Python SDK itself, in its own environment.

The SDK (``tests/sdk-requirements.txt``, pinned) cannot share MXNet's environment (it needs numpy
>= 1.26), so it gets ``.venv-sdk/``, made here on first use, as a user's notebook has its own.
``sdk_request`` runs ``sdk_request.py`` there against the moto server: the SDK's ``fit`` sends a
real CreateTrainingJob call, captured by a botocore event hook as it is sent. The SDK's telemetry
is turned off by its own configuration file, and a dead proxy on loopback stands in the way of anything
else that would leave the machine.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
VENV = REPOSITORY / ".venv-sdk"
REQUIREMENTS = REPOSITORY / "tests" / "sdk-requirements.txt"
SCRIPT = Path(__file__).with_name("sdk_request.py")
INSTALL_TIMEOUT_S = 1200
SDK_CONFIG = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"


def python() -> Path:
    """The SDK environment's interpreter, the environment made first when it is missing or out of date."""
    interpreter, installed = VENV / "bin" / "python", VENV / "requirements.txt"
    with open(REPOSITORY / ".venv-sdk.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed.is_file() and installed.read_text() == REQUIREMENTS.read_text():
            return interpreter
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
            check=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        installed.write_text(REQUIREMENTS.read_text())
    return interpreter


def sdk_request(spec: dict, env: dict, scratch: Path) -> dict:
    """The request the SDK sends for ``spec`` (see ``sdk_request.py``), with ``env`` pointing boto3 at moto."""
    config = scratch / "sagemaker-config.yaml"
    config.write_text(SDK_CONFIG)
    environment = {
        **env,
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(config),
        # anything but the moto server would meet a closed port on loopback, never the network
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    done = subprocess.run(
        [str(python()), str(SCRIPT), json.dumps(spec)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "127.0.0.1:9" not in done.stderr, done.stderr[-3000:]  # nothing tried to leave through the dead proxy
    return json.loads(done.stdout.strip().splitlines()[-1])
