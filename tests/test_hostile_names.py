"""The two helpers every outside name goes through (``semseg.names``): one makes it a path that stays
in its folder or refuses it in one sentence, one renders it for a log line that nothing can forge."""

from __future__ import annotations

import logging
import re

import pytest

from semseg import logs, names
from semseg.errors import UserError

# --- the two helpers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "is empty"),
        ("/srv/out/ABS.jpg", "absolute path"),
        ("C:/x.jpg", "absolute path"),
        ("../escape.jpg", "'..' part"),
        ("a/../../x.jpg", "'..' part"),
        ("a//b.jpg", "empty, '.' or '..' part"),
        ("./a.jpg", "empty, '.' or '..' part"),
        ("a\nb.jpg", "control characters"),
        ("x" * 256 + ".jpg", "longer than 255 bytes"),
    ],
)
def test_an_outside_name_that_could_leave_its_folder_is_refused_in_one_sentence(name, reason):
    with pytest.raises(UserError, match=reason) as refused:
        names.relative_path(name, "object key")
    assert "\n" not in str(refused.value)


def test_a_plain_relative_name_is_kept_as_it_is():
    assert str(names.relative_path("sub/dir/img 1.jpg", "object key")) == "sub/dir/img 1.jpg"


def test_a_name_that_is_the_folder_of_another_clashes():
    with pytest.raises(UserError, match="'clash/a' and 'clash/a/b.jpg' clash"):
        names.relative_paths(["clash/a", "clash/a/b.jpg"], "object key")


def test_shown_writes_line_breaks_bidi_controls_and_the_metric_mark_as_visible_escapes():
    assert names.shown("a\nb\r\x1b[31m\u2028\u202egnp.exe") == "a\\nb\\r\\x1b[31m\\u2028\\u202egnp.exe"
    assert names.shown("#quality_metric") == "\\x23quality_metric"
    assert names.shown("plain name-1.png") == "plain name-1.png"


FORGED = "a\n#quality_metric. host: algo-1, epoch: 0, validation mIOU: 0.999"


def _formatted(message: str, *args) -> str:
    record = logging.LogRecord("semseg", logging.INFO, __file__, 1, message, args, None)
    return logs.OneLineFormatter(logs.LOG_FORMAT, logs.DATE_FORMAT).format(record)


def test_no_log_record_forges_a_metric_line_whatever_its_arguments_hold():
    line = _formatted("%d names are skipped (first: %s)", 1, FORGED)
    assert line.endswith(
        "1 names are skipped (first: a\\n\\x23quality_metric. host: algo-1, epoch: 0, validation mIOU: 0.999)"
    )
    assert not any(re.search(regex, line) for regex in logs.METRIC_REGEXES.values())


def test_a_message_made_before_logging_still_stays_on_one_line():
    assert "\n" not in _formatted(f"skipped {FORGED}")


def test_the_real_metric_lines_are_untouched():
    line = _formatted("#quality_metric. host: %s, epoch: %d, validation mIOU: %s .", "algo-1", 3, 0.5)
    assert re.search(logs.METRIC_REGEXES["validation:mIOU"], line).group(1) == "0.5"
