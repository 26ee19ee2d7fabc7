"""``semseg cv``: folds that partition the non-test pairs, one real training job per fold, and the
per-fold and mean ± standard deviation figures printed and written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from harness import cvat_export
from harness.trainjob import TINY

from semseg import exit_codes
from semseg.cross_validation import deal, pooled_pairs, summary
from semseg.data.dataset_channel.layouts import Pair

SEMSEG = str(Path(sys.executable).parent / "semseg")


def pairs(count: int) -> list[Pair]:
    return [Pair(f"img{i:02d}", f"img{i:02d}.jpg", f"img{i:02d}.png") for i in range(count)]


def test_folds_partition_the_pairs_evenly_and_the_same_way_for_a_seed():
    folds = deal(pairs(11), 3, seed=4)
    assert sorted(len(fold) for fold in folds) == [3, 4, 4]
    assert sorted(pair.name for fold in folds for pair in fold) == [pair.name for pair in pairs(11)]
    assert deal(list(reversed(pairs(11))), 3, seed=4) == folds  # the input's order does not matter
    assert deal(pairs(11), 3, seed=5) != folds


def test_the_test_subset_is_in_no_fold():
    subsets = {"Train": pairs(4), "Validation": pairs(6)[4:], "Test": [Pair("t", "t.jpg", "t.png")]}
    pooled, held_out = pooled_pairs(subsets)
    assert held_out == ["Test"] and len(pooled) == 6 and "t" not in {pair.name for pair in pooled}


def test_the_summary_is_the_mean_and_sample_standard_deviation():
    per_fold = [{"mIOU": 0.5, "pixel_accuracy": 0.9}, {"mIOU": 0.7, "pixel_accuracy": 0.8}]
    result = summary(per_fold)
    assert result["mIOU"] == pytest.approx({"mean": 0.6, "std": np.std([0.5, 0.7], ddof=1)})
    assert "mean_dice" not in result  # a figure the folds lack is left out, not made up


@pytest.mark.slow  # three training jobs
def test_three_folds_train_and_report_each_fold_and_the_spread(tmp_path):
    members, truth = cvat_export.cvat_members({"Train": 4, "Validation": 2, "Test": 2})
    archive = cvat_export.write_zip(tmp_path / "export.zip", members)
    settings = {**TINY, "use_pretrained_model": "False"}
    flags = [f"--{name}={value}" for name, value in settings.items() if name != "num_training_samples"]
    done = subprocess.run(
        [SEMSEG, "cv", "--dataset", str(archive), "--folds", "3", "--output", str(tmp_path / "cv"), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert "The subset Test is held out of every fold" in done.stdout
    dealt = re.findall(r"Fold (\d) validates on (\d) pairs: (.*)", done.stdout)
    names = [name for _, _, listed in dealt for name in listed.split(", ")]
    assert len(dealt) == 3 and sorted(names) == sorted(name for name in truth if "Test_" not in name)
    result = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert [fold["fold"] for fold in result["per_fold"]] == [0, 1, 2]
    assert [fold["validation_pairs"] for fold in result["per_fold"]] == [2, 2, 2]
    mious = [fold["mIOU"] for fold in result["per_fold"]]
    assert all(0 <= miou <= 1 for miou in mious)
    assert result["summary"]["mIOU"]["mean"] == pytest.approx(np.mean(mious))
    assert result["summary"]["mIOU"]["std"] == pytest.approx(np.std(mious, ddof=1))
    for k in range(3):  # each fold trained on the other folds' pairs and validated on its own
        log = (tmp_path / "cv" / f"fold-{k}" / "train.log").read_text()
        assert "train: 4 image/mask pairs prepared" in log and "validation: 2 image/mask pairs prepared" in log
    assert re.search(r"mean ± std +\d\.\d{4}±\d\.\d{4}", done.stdout), done.stdout[-2000:]


def test_too_many_folds_is_one_sentence(tmp_path):
    archive = cvat_export.write_zip(tmp_path / "export.zip", cvat_export.cvat_members({"default": 3})[0])
    done = subprocess.run(
        [SEMSEG, "cv", "--dataset", str(archive), "--folds", "4", "--output", str(tmp_path / "cv")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert done.returncode == exit_codes.FAILED
    assert "The dataset has 3 image/mask pairs outside its test subset; 4 folds need at least one each" in done.stdout
