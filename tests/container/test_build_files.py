"""The files the image builds run, checked without Docker: the Dockerfiles lint clean, the pinned
requirement lists come out of pyproject.toml and constraints.txt, and the weight stager keeps only
files whose SHA-1 matches."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import io
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_hadolint_passes(dockerfile):
    result = subprocess.run(
        [str(HADOLINT), dockerfile], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert result.returncode == 0, result.stdout


def requirements(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "container" / "requirements.py"), *args],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_requirements_are_pyprojects_dependencies_at_the_pinned_versions():
    lines = requirements()
    assert "mxnet==1.9.1" in lines and "numpy==1.23.5" in lines
    assert not any(line.startswith(("pytest", "gluoncv")) for line in lines)
    assert "mxnet==1.9.1" not in requirements("--without", "mxnet")
    assert requirements("--only", "gluoncv") == ["gluoncv==0.10.5.post0"]


@pytest.fixture
def stager(tmp_path):
    spec = importlib.util.spec_from_file_location("stage_weights", ROOT / "container" / "stage_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "models").mkdir()
    return module


@pytest.fixture
def mirror(tmp_path):
    """A GluonCV-style model mirror on 127.0.0.1 serving the zips put in ``<dir>/gluon/models``."""
    root = tmp_path / "mirror"
    (root / "gluon" / "models").mkdir(parents=True)
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(root))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def publish(root: Path, file_name: str, content: bytes) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{file_name}.params", content)
    (root / "gluon" / "models" / f"{file_name}.zip").write_bytes(archive.getvalue())


def test_stager_keeps_a_file_whose_sha1_matches(stager, mirror, tmp_path):
    root, url = mirror
    content = b"backbone weights"
    sha1 = hashlib.sha1(content).hexdigest()
    stager.SHA1 = {"tiny_v1s": sha1}
    publish(root, f"tiny_v1s-{sha1[:8]}", content)
    staged = stager.stage("tiny_v1s", url, tmp_path / "models")
    assert staged == tmp_path / "models" / f"tiny_v1s-{sha1[:8]}.params"
    assert staged.read_bytes() == content


def test_stager_refuses_a_file_whose_sha1_differs(stager, mirror, tmp_path):
    root, url = mirror
    sha1 = hashlib.sha1(b"the published weights").hexdigest()
    stager.SHA1 = {"tiny_v1s": sha1}
    publish(root, f"tiny_v1s-{sha1[:8]}", b"something else")
    with pytest.raises(SystemExit, match="not " + sha1):
        stager.stage("tiny_v1s", url, tmp_path / "models")
    assert not any((tmp_path / "models").iterdir())


def test_stager_names_files_as_the_runtime_looks_for_them(stager):
    from semseg.model.pretrained import STAGED_FILE

    assert {name: f"{name}-{sha1[:8]}.params" for name, sha1 in stager.SHA1.items()} == STAGED_FILE


def test_every_package_of_the_tree_goes_into_the_wheel():
    """The image installs the wheel, not this tree: a subpackage left out of pyproject's list is missing there."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(top.parent).parts)
        for top in (ROOT / "src" / "semseg", ROOT / "serve")
        for init in top.rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
