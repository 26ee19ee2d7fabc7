"""Learning is asserted, not assumed: a short CPU run must segment a task it can learn.

The task is the sample data's four classes (background, discs, rectangles, triangles, each with
its own hue on a noisy background). FCN-ResNet-50 from scratch (no ImageNet weights exist
offline), crop 64, batch 4, Adam; the same settings ``semseg demo`` uses.
"""

from __future__ import annotations

import re

import pytest

from semseg.demo import DEMO_HYPERPARAMETERS
from semseg.logs import METRIC_REGEXES

REQUIRED_MIOU = 0.80

pytestmark = pytest.mark.slow


def test_a_short_cpu_run_reaches_the_stated_miou(learnt_model):
    job = learnt_model
    assert job.returncode == 0, job.log[-3000:]
    mious = [float(v) for v in re.findall(METRIC_REGEXES["validation:mIOU"], job.log)]
    assert len(mious) == int(DEMO_HYPERPARAMETERS["epochs"])
    assert max(mious) >= REQUIRED_MIOU, mious
