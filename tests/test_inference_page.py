"""The inference page and the class table routes through Flask's test client, and what
``semseg serve --model`` accepts. The page's behaviour in a real browser: test_inference_page_browser.py."""

from __future__ import annotations

import re
import tarfile
from html.parser import HTMLParser

import pytest
from test_serving_app import UniformEngine, png

from semseg import classes, exit_codes
from semseg.errors import UserError
from semseg.inference.predictor import Predictor
from semseg.inference.settings import ServingSettings, from_environment
from semseg.model.artifacts import model_to_serve
from serve.app import create_app

NAMED = classes.ClassTable(("road", "car & bus", "sky"), ((128, 64, 128), (250, 50, 83), (70, 130, 180)))


def client(table=None):
    return create_app(ServingSettings(), Predictor(UniformEngine(), 10**6, table)).test_client()


class Loads(HTMLParser):
    """Every URL the page would load or link to, and the names of its tags."""

    def __init__(self):
        super().__init__()
        self.urls, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [value for name, value in attrs if name in ("src", "href", "srcset", "action", "data") and value]


def test_the_page_is_self_contained():
    answer = client().get("/")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    found = Loads()
    found.feed(answer.text)
    assert found.urls == [] and "link" not in found.tags and "iframe" not in found.tags
    assert not re.search(r"@import|url\(|https?:", answer.text.split("-->", 1)[1])
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy  # the browser enforces it
    assert (
        'fetch("/invocations"' in answer.text
        and 'fetch("/classes"' in answer.text
        and 'fetch("/models")' in answer.text
    )


def test_classes_are_the_models_table_or_the_defaults():
    assert client(NAMED).get("/classes").get_json() == NAMED.to_json()
    default = client().get("/classes").get_json()["classes"]
    assert [c["name"] for c in default] == ["class_0", "class_1", "class_2"]
    assert [tuple(c["color"]) for c in default] == classes.voc_colors()[:3]


def test_the_json_answer_through_the_app_carries_the_names():
    answer = client(NAMED).post(
        "/invocations", data=png(), content_type="image/png", headers={"Accept": "application/json"}
    )
    assert answer.status_code == 200 and answer.get_json()["classes"] == ["road", "car & bus", "sky"]


def test_an_unknown_path_names_the_page_and_the_classes_route():
    answer = client().get("/nothing")
    assert answer.status_code == 404
    assert (
        "GET /classes, GET /models, GET /metrics, POST /cvat/detector and GET / (the inference page)"
        in answer.get_json()["error"]
    )


def test_serve_model_accepts_a_model_dir_an_archive_or_a_job_root(tmp_path):
    root = tmp_path / "job"
    (root / "model").mkdir(parents=True)
    (root / "model" / "hyperparams.json").write_text("{}")
    assert model_to_serve(root) == (root / "model").resolve()
    assert model_to_serve(root / "model") == (root / "model").resolve()
    archive = tmp_path / "packed" / "model.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(root / "model" / "hyperparams.json", arcname="hyperparams.json")
    assert model_to_serve(archive.parent) == archive.parent.resolve()
    assert model_to_serve(archive) == archive.resolve()
    with pytest.raises(UserError, match="There is no model at .*nowhere"):
        model_to_serve(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no model: neither hyperparams.json nor a model.tar.gz"):
        model_to_serve(tmp_path / "empty")


def test_the_model_dir_setting(tmp_path):
    assert from_environment({}).model_dir is None
    assert from_environment({"SEMSEG_MODEL_DIR": str(tmp_path)}).model_dir == tmp_path


def test_serve_refuses_a_missing_model_or_a_bad_port_in_one_sentence(tmp_path, monkeypatch, capsys):
    from semseg import cli

    monkeypatch.setenv("SEMSEG_MODEL_DIR", "")  # serve_main sets these: restored afterwards
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "8080")
    monkeypatch.setenv("SEMSEG_BIND_HOST", "")
    assert cli.main(["serve", "--model", str(tmp_path / "nowhere")]) == exit_codes.FAILED
    assert capsys.readouterr().err.strip() == (
        f"semseg serve: There is no model at {tmp_path / 'nowhere'}: "
        "give a model directory, a model.tar.gz or a job's /opt/ml root"
    )
    assert cli.main(["serve", "--port", "0"]) == exit_codes.FAILED
    assert capsys.readouterr().err.strip() == "semseg serve: --port is 0; it must be a whole number from 1 to 65535"
