"""How ``semseg job`` packs model.tar.gz and output.tar.gz: gzip at level 1 unless told otherwise."""

from __future__ import annotations

import tarfile

import pytest

from semseg.errors import UserError
from semseg.jobs.training_job import GZIP_LEVEL_VARIABLE, gzip_level, package

MEGABYTE = 2**20


@pytest.fixture
def model_dir(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "zeros.params").write_bytes(bytes(MEGABYTE))
    (directory / "hyperparams.json").write_text('{"num_classes": "4"}')
    return directory


def _pack(model_dir, name: str) -> tuple[int, dict[str, int]]:
    archive = package(model_dir, model_dir.parent / name, gzip_level())
    with tarfile.open(archive, "r:gz") as tar:  # gzip either way, read as SageMaker and serve read it
        members = {m.name: m.size for m in tar.getmembers()}
    return archive.stat().st_size, members


def test_the_default_compresses_and_level_0_stores(model_dir, monkeypatch):
    monkeypatch.delenv(GZIP_LEVEL_VARIABLE, raising=False)
    compressed, members = _pack(model_dir, "default.tar.gz")
    assert members == {"hyperparams.json": 20, "zeros.params": MEGABYTE}
    assert compressed < MEGABYTE // 100

    monkeypatch.setenv(GZIP_LEVEL_VARIABLE, "0")
    stored, members = _pack(model_dir, "stored.tar.gz")
    assert members == {"hyperparams.json": 20, "zeros.params": MEGABYTE}
    assert stored > MEGABYTE


@pytest.mark.parametrize("value", ["fast", "10", "-1"])
def test_a_bad_level_is_one_sentence(monkeypatch, value):
    monkeypatch.setenv(GZIP_LEVEL_VARIABLE, value)
    with pytest.raises(UserError, match=f"^SEMSEG_JOB_GZIP_LEVEL is '{value}'; it must be a gzip level from 0"):
        gzip_level()
