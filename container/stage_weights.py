"""Stage GluonCV's ImageNet backbones into ``$MXNET_HOME/models`` at image build time.

The files land where GluonCV itself keeps them (``<name>-<sha1[:8]>.params``), which is where
``semseg.model.pretrained`` looks at run time. This script needs neither mxnet nor gluoncv, so it
also runs in the GPU image's build, where importing mxnet fails for want of the driver's libcuda.
Each file is checked against GluonCV's published SHA-1 before it is kept.

    MXNET_HOME=/opt/semseg/mxnet python3 container/stage_weights.py [mirror URL]
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import urllib.request
import zipfile
from pathlib import Path

# GluonCV 0.10.5's model_store table: full SHA-1 of each .params file.
SHA1 = {
    "resnet18_v1b": "2d9d980c990442f826f20781ed039851e78dabe3",
    "resnet34_v1b": "8e16b84814e84f64d897854003f049872991eaa6",
    "resnet50_v1s": "25a187fa281ddc98afbcd0cc0f0646885b874b80",
    "resnet101_v1s": "bd93a83c05f709a803b1221aeff0b028e6eebb03",
}
DEFAULT_MIRROR = "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/"


def stage(name: str, mirror: str, models: Path) -> Path:
    file_name = f"{name}-{SHA1[name][:8]}"
    url = f"{mirror.rstrip('/')}/gluon/models/{file_name}.zip"
    print(f"Fetching {url}", flush=True)
    with urllib.request.urlopen(url, timeout=300) as response:
        archive = zipfile.ZipFile(io.BytesIO(response.read()))
    data = archive.read(f"{file_name}.params")
    digest = hashlib.sha1(data).hexdigest()
    if digest != SHA1[name]:
        raise SystemExit(f"{url} holds {file_name}.params with SHA-1 {digest}, not {SHA1[name]}")
    target = models / f"{file_name}.params"
    target.write_bytes(data)
    target.chmod(0o444)
    return target


def main() -> None:
    mirror = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MIRROR
    models = Path(os.environ["MXNET_HOME"]) / "models"
    models.mkdir(parents=True, exist_ok=True)
    for name in SHA1:
        print(f"Staged {stage(name, mirror, models)}", flush=True)


if __name__ == "__main__":
    main()
