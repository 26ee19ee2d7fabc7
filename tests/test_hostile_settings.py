"""Serving settings from outside: every one checked, against a stated bound, before anything starts.

Most cases read the settings from a dict environment. A refusal is also shown once per kind on the
real ``serve`` and ``semseg serve`` commands: exit code 1 and one sentence on stderr, before a model
is loaded. Then the local command's loopback default, the inference page's Content-Security-Policy
and ``nosniff`` header, and class names (long, or holding bidi controls) in the page's legend and in
the training report.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from harness.ports import free_port
from harness.serving_helpers import BIN, Server, encoded, named_model_server, sample_image
from test_inference_page_browser import browser, run_on  # noqa: F401 (browser: a fixture used below)
from test_serving_app import UniformEngine, png

from semseg import archives, classes
from semseg.errors import UserError
from semseg.inference import settings
from semseg.inference.predictor import Predictor
from semseg.report import html as report_html
from semseg.report import plots
from serve import model_fetch, responses
from serve.app import create_app

REFUSAL_WAIT_S = 60  # a refusal takes about a second; a server that starts instead is stopped after this
RLO = "\u202e"
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
LONG_NAME = "a class whose name goes on and on " * 8
HOSTILE_NAMES = ("background", f"{RLO}gnp.exe", LONG_NAME, "car & <bus>")


def refused(environ: dict[str, str], message: str) -> str:
    """The one sentence ``from_environment(environ)`` refuses it with; it must match ``message``."""
    with pytest.raises(UserError) as caught:
        settings.from_environment(environ)
    sentence = str(caught.value)
    assert re.search(message, sentence), sentence
    assert "\n" not in sentence and "\u202e" not in sentence
    return sentence


# -- the default answer type -------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [("IMAGE/PNG", "image/png"), ("Application/JSON", "application/json")])
def test_the_default_accept_is_matched_case_insensitively_as_the_header_is(value, expected):
    assert settings.from_environment({"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": value}).default_accept == expected
    assert settings.from_environment({}).default_accept == "image/png"


@pytest.mark.parametrize("value", ["text/html", "image/png, application/json", "*/*", f"image/png{RLO}"])
def test_an_unsupported_default_accept_is_refused_in_one_sentence(value):
    sentence = refused(
        {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": value},
        r"^The environment variable SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT is '.*'; it must be one of image/png, ",
    )
    assert "application/json" in sentence


# -- numeric bounds ----------------------------------------------------------------------------

BOUNDED = [
    ("SAGEMAKER_BIND_TO_PORT", "MAX_PORT"),
    ("SAGEMAKER_MODEL_SERVER_WORKERS", "MAX_WORKERS"),
    ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "MAX_TIMEOUT_S"),
    ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "MAX_PAYLOAD_MB"),
    ("SEMSEG_MAX_IMAGE_PIXELS", "MAX_IMAGE_PIXELS_BOUND"),
    ("SEMSEG_INFERENCE_SIZE", "MAX_INFERENCE_SIZE"),
    ("SEMSEG_INFERENCE_THREADS", "MAX_INFERENCE_THREADS"),
    ("SEMSEG_CLIENT_TIMEOUT", "MAX_CLIENT_TIMEOUT_S"),
    ("SEMSEG_MAX_WINDOWS", "MAX_WINDOWS_BOUND"),
    ("SEMSEG_SLIDING_WINDOW_FACTOR", "MAX_SLIDING_WINDOW_FACTOR"),
]


@pytest.mark.parametrize("variable,bound", BOUNDED)
def test_every_numeric_setting_has_an_upper_bound_said_in_one_sentence(variable, bound):
    highest = getattr(settings, bound)
    assert settings.from_environment({variable: str(highest)})  # the bound itself is allowed
    for value in (str(highest + 1), "100000000000000000000", "1" + "0" * 5000):
        sentence = refused({variable: value}, rf"^The environment variable {variable} is .*; it must be .*{highest}$")
        assert len(sentence) < 300  # a 5000-digit value is not repeated in full


def test_the_examples_that_used_to_start_are_refused():
    refused({"SEMSEG_CLIENT_TIMEOUT": "100000000000000000000"}, "SEMSEG_CLIENT_TIMEOUT is 100000000000000000000")
    refused({"SEMSEG_INFERENCE_SIZE": "100000"}, "SEMSEG_INFERENCE_SIZE is 100000; it must be")
    refused({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "101"}, "SAGEMAKER_MAX_PAYLOAD_IN_MB is 101; it must be .* 100")
    refused({"SEMSEG_SLIDING_WINDOW_FACTOR": "inf"}, "SEMSEG_SLIDING_WINDOW_FACTOR is inf; it must be")
    refused({"SEMSEG_SLIDING_WINDOW_FACTOR": "nan"}, "SEMSEG_SLIDING_WINDOW_FACTOR is nan; it must be")
    refused({"SEMSEG_CLIENT_TIMEOUT": f"3{RLO}0"}, r"SEMSEG_CLIENT_TIMEOUT is '3\\u202e0'; it must be a whole number")


def test_a_payload_of_0_still_means_the_largest_limit():
    assert settings.from_environment({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}).max_payload_mb == settings.MAX_PAYLOAD_MB
    assert settings.from_environment({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "100"}).max_payload_mb == 100
    assert settings.MAX_PAYLOAD_MB == 100  # SageMaker's own limit for a request


@pytest.mark.parametrize("value", ["0", "-1", "65536", "99999999"])
def test_a_port_outside_1_to_65535_is_refused(value):
    refused({"SAGEMAKER_BIND_TO_PORT": value}, rf"^The environment variable SAGEMAKER_BIND_TO_PORT is {value}; .*65535")


@pytest.mark.parametrize("value", ["-5", "lots", "1e9", str(2**80), "0"])
def test_the_extraction_cap_is_a_sane_number_of_bytes(monkeypatch, value):
    monkeypatch.setenv("SEMSEG_MAX_EXTRACTED_BYTES", value)
    with pytest.raises(UserError, match=r"^The environment variable SEMSEG_MAX_EXTRACTED_BYTES is .*; it must be"):
        archives.max_extracted_bytes()
    monkeypatch.setenv("SEMSEG_MAX_EXTRACTED_BYTES", "10000")
    assert archives.max_extracted_bytes() == 10000
    monkeypatch.setenv("SEMSEG_MAX_EXTRACTED_BYTES", str(archives.MAX_EXTRACTED_BYTES_LIMIT))
    assert archives.max_extracted_bytes() == archives.MAX_EXTRACTED_BYTES_LIMIT


# -- the real commands refuse at start-up --------------------------------------------------------


def run_until_exit(command: list[str], env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    """``command`` run to its end; one that is still running after REFUSAL_WAIT_S (it started a
    server instead of refusing) is killed with its whole process group and the test fails."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("SAGEMAKER_", "SEMSEG_"))}
    environment.update(
        {
            "SAGEMAKER_BASE_DIR": str(tmp_path),
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
            "SAGEMAKER_BIND_TO_PORT": str(free_port()),
            "SEMSEG_BIND_HOST": "127.0.0.1",  # should it start after all, only on loopback
            **env,
        }
    )
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = process.communicate(timeout=REFUSAL_WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{command} started instead of refusing its settings: {(out + err)[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def assert_one_sentence(done: subprocess.CompletedProcess, prefix: str, *fragments: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "env,fragments",
    [
        (
            {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/html"},
            ["SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT is 'text/html'"],
        ),
        ({"SEMSEG_CLIENT_TIMEOUT": "100000000000000000000"}, ["SEMSEG_CLIENT_TIMEOUT is 100000000000000000000"]),
        ({"SAGEMAKER_BIND_TO_PORT": "70000"}, ["SAGEMAKER_BIND_TO_PORT is 70000", "65535"]),
        ({"SEMSEG_MAX_EXTRACTED_BYTES": "-5"}, ["SEMSEG_MAX_EXTRACTED_BYTES is -5"]),
        ({"SEMSEG_BIND_HOST": "every\ninterface"}, ["SEMSEG_BIND_HOST is 'every\\ninterface'"]),
    ],
    ids=["accept", "client-timeout", "port", "extracted-bytes", "host"],
)
def test_serve_refuses_a_bad_setting_at_start_up_in_one_sentence(env, fragments, tmp_path):
    done = run_until_exit([str(BIN / "serve")], env, tmp_path)
    assert_one_sentence(done, "serve: The environment variable ", *fragments)


def test_semseg_serve_refuses_a_port_over_65535_in_one_sentence(tmp_path):
    done = run_until_exit([str(BIN / "semseg"), "serve", "--port", "70000"], {}, tmp_path)
    assert_one_sentence(done, "semseg serve: ", "--port is 70000", "65535")


# -- where the server listens ------------------------------------------------------------------


def test_the_image_serve_listens_on_every_interface_as_sagemaker_expects():
    assert settings.from_environment({}).bind == "0.0.0.0:8080"
    assert settings.from_environment({"SEMSEG_BIND_HOST": "::1", "SAGEMAKER_BIND_TO_PORT": "9000"}).bind == "[::1]:9000"
    assert settings.from_environment({"SEMSEG_BIND_HOST": "localhost"}).bind == "localhost:8080"
    refused({"SEMSEG_BIND_HOST": "0.0.0.0:80"}, r"^The environment variable SEMSEG_BIND_HOST is '0.0.0.0:80'")


def test_the_local_command_takes_host_and_port_and_defaults_to_loopback(tmp_path):
    from semseg import cli

    environ: dict[str, str] = {}
    assert cli.local_serve_settings(None, None, None, environ).bind == "127.0.0.1:8080"
    assert environ["SEMSEG_BIND_HOST"] == "127.0.0.1"
    assert cli.local_serve_settings(None, 9001, "::1", environ).bind == "[::1]:9001"
    with pytest.raises(UserError, match=r"^--port is 0; it must be a whole number from 1 to 65535$"):
        cli.local_serve_settings(None, 0, None, {})
    with pytest.raises(UserError, match=r"^--host is 'a b'; "):
        cli.local_serve_settings(None, None, "a b", {})


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_placeholder_of_a_model_being_fetched_listens_where_gunicorn_will(host):
    """The 503 placeholder's socket is the one gunicorn inherits: it must be bound to the chosen host."""
    with model_fetch.placeholder(host, free_port(), "fetching") as listener:
        assert listener.getsockname()[0] == host


def test_semseg_serve_listens_on_loopback_only_by_default(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "hyperparams.json").write_text("{}")  # accepted by --model, then not loadable: /ping says 503
    command = [str(BIN / "semseg"), "serve", "--model", str(model)]
    server = Server(tmp_path, tmp_path / "serve.log", command, SEMSEG_BIND_HOST="")
    try:
        assert server.wait_until_up().status_code == 503, server.log()
        assert f"Listening at: http://127.0.0.1:{server.port} " in server.log(), server.log()
    finally:
        server.stop()


# -- the page's policy and the JSON routes' headers ----------------------------------------------


class InlineCode(HTMLParser):
    """The text of each inline ``<script>`` and ``<style>`` of a page."""

    def __init__(self):
        super().__init__()
        self.texts: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag in self.texts:
            self._open = tag
            self.texts[tag].append("")

    def handle_endtag(self, tag):
        self._open = None

    def handle_data(self, data):
        if self._open:
            self.texts[self._open][-1] += data


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def app_client(table=None):
    return create_app(settings.ServingSettings(), Predictor(UniformEngine(), 10**6, table)).test_client()


def test_the_page_policy_allows_its_own_inline_code_by_hash_and_nothing_else_inline():
    answer = app_client().get("/")
    policy = answer.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    code = InlineCode()
    code.feed(answer.text)
    assert len(code.texts["script"]) == 1 and len(code.texts["style"]) == 1
    assert directives["script-src"] == sha256_source(code.texts["script"][0])
    assert directives["style-src"] == sha256_source(code.texts["style"][0])
    assert directives["default-src"] == "'none'" and directives["connect-src"] == "'self'"


def test_json_answers_say_nosniff():
    client = app_client()
    answers = [
        client.get("/classes"),
        client.get("/ping"),
        client.get("/execution-parameters"),
        client.get("/nowhere"),
        client.post("/invocations", data=png(), content_type="text/html"),
        client.post("/invocations", data=png(), content_type="image/png", headers={"Accept": "application/json"}),
    ]
    for answer in answers:
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", (answer.status, dict(answer.headers))
    raw = responses.raw_json_error(408, "Request Timeout", "too slow")
    assert b"\r\nX-Content-Type-Options: nosniff\r\n" in raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


# -- class names in the training report ----------------------------------------------------------

HOSTILE_TABLE = classes.ClassTable(HOSTILE_NAMES, ((0, 0, 0), (220, 20, 60), (30, 160, 50), (40, 60, 220)))
BEST = {
    "epoch": 0,
    "mIOU": 0.5,
    "pixel_accuracy": 0.75,
    "per_class_iou": [0.9, 0.5, 0.25, 0.1],
    "confusion_matrix": np.eye(4, dtype=int).tolist(),
}


class Isolated(HTMLParser):
    """The text inside each ``<bdi>`` of a page, and all of the page's text outside them."""

    def __init__(self):
        super().__init__()
        self.isolated: list[str] = []
        self.outside: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        if tag == "bdi":
            self._depth += 1
            self.isolated.append("")

    def handle_endtag(self, tag):
        if tag == "bdi":
            self._depth -= 1

    def handle_data(self, data):
        if self._depth:
            self.isolated[-1] += data
        else:
            self.outside.append(data)


def test_the_report_table_isolates_each_class_name_and_keeps_it_whole():
    page = report_html.render([{"epoch": 0}], BEST, HOSTILE_TABLE, [1, 1, 1, 1], {})
    found = Isolated()
    found.feed(page)
    assert found.isolated == list(HOSTILE_NAMES)  # whole, each in its own <bdi>
    assert not any(BIDI_CONTROLS.search(text) for text in found.outside)
    assert re.search(r"td\.name \{[^}]*overflow-wrap: anywhere", page)  # a long name wraps, not widens the page


def drawn_labels(monkeypatch, draw) -> list[str]:
    """The tick labels of the figure ``draw(path)`` makes (captured instead of saved)."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure))
    draw()
    (figure,) = figures
    return [label.get_text() for axes in figure.axes for label in axes.get_yticklabels() + axes.get_xticklabels()]


def test_the_report_figures_show_hostile_class_names_escaped_and_truncated(monkeypatch, tmp_path):
    ious, matrix = BEST["per_class_iou"], np.asarray(BEST["confusion_matrix"])
    for draw in (
        lambda: plots.class_iou(ious, HOSTILE_TABLE, tmp_path / "iou.png"),
        lambda: plots.confusion(matrix, HOSTILE_TABLE, tmp_path / "confusion.png"),
    ):
        labels = [label for label in drawn_labels(monkeypatch, draw) if re.search("[a-z]", label)]
        assert labels, "no class name drawn"
        assert not any(BIDI_CONTROLS.search(label) for label in labels), labels
        assert any("\\u202egnp.exe" in label for label in labels), labels
        assert any(label.endswith("\u2026") and "a class whose name" in label for label in labels), labels
        assert max(map(len, labels)) <= plots.MAX_LABEL_CHARS + len("3 "), labels


def test_the_report_figures_draw_a_class_name_with_dollar_signs_as_text(tmp_path):
    table = classes.ClassTable(("$\\frac$", "price in $ and $$"), ((0, 0, 0), (200, 0, 0)))
    plots.class_iou([0.5, 0.5], table, tmp_path / "iou.png")  # mathtext would refuse the first name
    plots.confusion(np.eye(2, dtype=int), table, tmp_path / "confusion.png")
    assert (tmp_path / "iou.png").stat().st_size > 0 and (tmp_path / "confusion.png").stat().st_size > 0


# -- class names in the page's legend, in a browser ------------------------------------------------


@pytest.fixture(scope="module")
def named_server(tmp_path_factory):
    """``semseg serve --model ROOT`` on the test fcn model with hostile class names (the browser
    fixture, imported, quits before this server stops)."""
    with named_model_server(tmp_path_factory, HOSTILE_TABLE) as server:
        yield server


@pytest.mark.slow
def test_the_legend_isolates_and_truncates_long_or_bidi_class_names(browser, named_server, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    picture = tmp_path / "street.jpg"
    picture.write_bytes(encoded(sample_image(120, 90, seed=3), "JPEG"))
    assert run_on(browser, named_server, picture) == "done", browser.find_element(By.ID, "status").text
    legend = browser.find_elements(By.CSS_SELECTOR, "#legend li")
    assert len(legend) == len(HOSTILE_NAMES)
    widths = []
    for item, name in zip(legend, HOSTILE_NAMES):
        label = item.find_element(By.CLASS_NAME, "name")
        assert label.tag_name == "bdi" and label.get_attribute("title") == name
        assert label.value_of_css_property("unicode-bidi") == "isolate"
        share = item.find_element(By.CLASS_NAME, "share")
        assert re.fullmatch(r"\d+\.\d%", share.text), share.text
        assert share.location["x"] > label.location["x"]  # the share stays right of the name, RLO or not
        widths.append(label.size["width"])
    legend_width = browser.find_element(By.ID, "legend").size["width"]
    assert widths[2] < legend_width and widths[2] <= 400, widths  # the long name is cut, not the layout


def test_the_serving_doc_states_the_bounds_the_server_applies():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text()
    table = doc.split("## Settings (environment)\n", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| [^|]* \| (\d+) to (\d+) \|", table, re.MULTILINE)
    assert len(rows) >= len(BOUNDED), table
    for variable, low, high in rows:
        assert settings.from_environment({variable: high}) and settings.from_environment({variable: low})
        refused({variable: str(int(high) + 1)}, rf"^The environment variable {variable} is {int(high) + 1}; .*{high}$")
