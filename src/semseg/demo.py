"""``semseg demo``: the whole product on an embedded sample, with nothing to download.

Makes a synthetic dataset laid out as a SageMaker training job's /opt/ml tree, runs the real
``train`` command on it, starts the real ``serve`` command on 127.0.0.1, segments a held-out
image through ``POST /invocations`` and writes the returned mask beside it. The sample's class names
go into the model directory first (``classes.json``), so the report and the page show them. It ends
by saying where the training report is and how to open the inference page.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from . import classes, paths
from .inference.settings import HOST_VARIABLE, LOCAL_HOST
from .sample_data import CLASSES, make_pair, write_opt_ml_tree

# Settings a CPU learns the sample task with in a few minutes (see tests/test_learning.py). 12 epochs,
# not 8: on several threads runs are not bit-reproducible, and at 8 epochs one job's outcomes spread
# too wide for the learning test's bar (docs/performance.md, "Two threads").
DEMO_HYPERPARAMETERS = {
    "algorithm": "fcn",
    "backbone": "resnet-50",
    "use_pretrained_model": "False",
    "crop_size": "64",
    "base_size": "96",
    "epochs": "12",
    "mini_batch_size": "4",
    "num_training_samples": "160",
    "optimizer": "adam",
    "learning_rate": "0.002",
    "validation_mini_batch_size": "16",
}


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_ping(url: str, server: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited before answering /ping")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not answer /ping in time")


def run_demo(workdir: str) -> int:
    root = Path(workdir).resolve() / "opt_ml"
    print(f"1/3 Writing a sample dataset and training job under {root}", flush=True)
    write_opt_ml_tree(root, train=32, validation=16, hyperparameters=DEMO_HYPERPARAMETERS)
    classes.save(CLASSES, paths.model_dir(root))
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root)}
    print("2/3 Training (the log lines are those of SageMaker's built-in algorithm)", flush=True)
    if subprocess.call([_script("train")], env=env) != 0:
        print(f"Training failed: {(root / 'output' / 'failure').read_text()}", flush=True)
        return 1

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"3/3 Serving the model at {url} and segmenting a new image", flush=True)
    server = subprocess.Popen(
        [_script("serve")],
        env={
            **env,
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
            HOST_VARIABLE: LOCAL_HOST,  # the demo's server is for this machine only
        },
    )
    try:
        _wait_for_ping(url, server)
        image, truth = make_pair(np.random.RandomState(1234), 160, 120)
        body = io.BytesIO()
        image.save(body, format="JPEG", quality=95)
        request = urllib.request.Request(
            url + "/invocations", data=body.getvalue(), headers={"Content-Type": "image/jpeg", "Accept": "image/png"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            mask = Image.open(io.BytesIO(response.read()))
            mask.load()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    out = Path(workdir).resolve()
    image.save(out / "image.jpg")
    mask.save(out / "mask.png")  # its palette is the model's class colours
    agreement = float((np.asarray(mask) == np.asarray(truth)).mean())
    print(
        f"Wrote {out / 'image.jpg'} and its predicted mask {out / 'mask.png'} "
        f"({mask.size[0]}x{mask.size[1]}); {100 * agreement:.1f}% of pixels agree with the true mask",
        flush=True,
    )
    print(f"Training report: {paths.output_data_dir(root) / 'report.html'}", flush=True)
    print(f"Inference page: run `{_script('semseg')} serve --model {root}` and open http://localhost:8080/", flush=True)
    return 0
