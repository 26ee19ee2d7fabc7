"""The training log as SageMaker reads it: every line passed on to this process's stdout and kept
in the job folder's ``training.log``, and the request's ``MetricDefinitions`` applied to it.

SageMaker applies each definition's regex to every log line and takes its first group as the
metric's value at that moment; ``describe_training_job`` reports the last value of each as
``FinalMetricDataList``. For the built-in algorithm's image, whose request usually gives none,
SageMaker applies the algorithm's own definitions, which are ``logs.METRIC_REGEXES`` here.
"""

from __future__ import annotations

import datetime
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger("semseg")

LOG_FILE = "training.log"
TIMELINE_FILE = "metric_timeline.json"
JOIN_TIMEOUT_S = 10  # after training exits, for the rest of its output


def iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


@dataclass(frozen=True)
class MetricDefinition:
    name: str
    regex: re.Pattern


@dataclass
class MetricLog:
    """Reads a training process's output on a thread until it ends."""

    definitions: tuple[MetricDefinition, ...]
    log_path: Path
    timeline: list[dict] = field(default_factory=list)  # {"MetricName", "Value", "Timestamp"}, in log order
    _thread: threading.Thread | None = None

    def follow(self, stream: IO[bytes]) -> None:
        self._thread = threading.Thread(target=self._read, args=(stream,), name="training-log", daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with open(self.log_path, "wb") as kept:
            for raw in iter(stream.readline, b""):
                sys.stdout.buffer.write(raw)
                sys.stdout.buffer.flush()
                kept.write(raw)
                self._match(raw.decode("utf-8", "replace"), time.time())

    def _match(self, line: str, when: float) -> None:
        for definition in self.definitions:
            found = definition.regex.search(line)
            if found is None:
                continue
            try:
                value = float(found.group(1))
            except (IndexError, TypeError, ValueError):
                continue
            self.timeline.append({"MetricName": definition.name, "Value": value, "Timestamp": iso(when)})

    def join(self) -> None:
        """Wait for the output to end (bounded: a descendant that kept the pipe open is not waited for)."""
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)

    def final(self) -> list[dict]:
        """The last value of each metric the log gave, in the definitions' order."""
        last = {entry["MetricName"]: entry for entry in self.timeline}
        return [last[d.name] for d in self.definitions if d.name in last]
