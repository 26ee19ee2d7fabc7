"""Several models in one server: which directory layouts are served as which models, how a request
names its model (SageMaker's ``X-Amzn-SageMaker-Target-Model``), and the memory budget (at most
``SEMSEG_MAX_LOADED_MODELS`` loaded per worker, the least recently used unloaded first).

The repository's own rules run with stand-in engines (no model files); the last tests serve real
trained models from a directory through gunicorn on 127.0.0.1 and watch the worker's memory.
"""

from __future__ import annotations

import gc
import random
import tarfile
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import requests

from semseg import classes
from semseg.errors import UserError
from semseg.inference.predictor import Predictor
from semseg.inference.repository import ModelRepository, UnknownModel, find_models
from semseg.inference.settings import ServingSettings, from_environment
from serve.app import create_app


class WinnerEngine:
    """Satisfies ``Engine``: every pixel is class ``winner``."""

    name, input_size = "stand-in", 16

    def __init__(self, num_classes: int, winner: int):
        self.num_classes, self.winner = num_classes, winner

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        out = np.zeros((batch.shape[0], self.num_classes, self.input_size, self.input_size), np.float32)
        out[:, self.winner] = 1
        return out


class CountingLoader:
    """Loads model ``<name>`` (a path ending in it) as a predictor whose pixels are all class
    ``index of name``, with classes named ``<name>-0 ..``; counts loads and loads running at once."""

    def __init__(self, names: list[str], failing: tuple[str, ...] = ()):
        self.names, self.failing = names, failing
        self.loads: list[str] = []
        self.running = self.most_running = 0
        self.alive = weakref.WeakSet()
        self._lock = threading.Lock()

    def __call__(self, path: Path, settings: ServingSettings) -> Predictor:
        name = path.name
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.loads.append(name)
        try:
            time.sleep(0.01)  # a load takes a while: other threads get to run meanwhile
            if name in self.failing:
                raise UserError(f"its weights of {name} are damaged")
            count = len(self.names)
            table = classes.ClassTable(tuple(f"{name}-{i}" for i in range(count)), tuple(classes.voc_colors(count)))
            predictor = Predictor(WinnerEngine(count, self.names.index(name)), 10**6, table)
            self.alive.add(predictor)
            return predictor
        finally:
            with self._lock:
                self.running -= 1


def repository_of(tmp_path: Path, names: list[str], max_loaded: int = 2, **kwargs) -> ModelRepository:
    loader = CountingLoader(names, kwargs.pop("failing", ()))
    settings = ServingSettings(max_loaded_models=max_loaded)
    return ModelRepository({name: tmp_path / name for name in names}, settings, loader=loader, **kwargs)


def png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def a_model(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "hyperparams.json").write_text("{}")
    return directory


def an_archive(path: Path, source: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        archive.add(source / "hyperparams.json", arcname="hyperparams.json")
    return path


def test_one_model_is_served_under_its_folders_name_and_a_folder_of_models_by_theirs(tmp_path):
    single = a_model(tmp_path / "single")
    assert find_models(single) == {"single": single.resolve()}
    job = tmp_path / "job"
    a_model(job / "model")
    assert find_models(job) == {"job": (job / "model").resolve()}
    packed = tmp_path / "packed"
    packed.mkdir()
    an_archive(packed / "model.tar.gz", single)
    assert find_models(packed) == {"packed": packed.resolve()}  # one archive: SageMaker's model/ folder
    assert find_models(packed / "model.tar.gz") == {"model": packed / "model.tar.gz"}

    repo = tmp_path / "repo"
    a_model(repo / "v1")
    a_model(repo / "job-root" / "model")
    an_archive(repo / "v2.tar.gz", single)
    an_archive(repo / "v3.tgz", single)
    a_model(repo / ".hidden")
    (repo / "notes").mkdir()
    (repo / "README.txt").write_text("not a model")
    found = find_models(repo)
    assert list(found) == ["job-root", "v1", "v2", "v3"]
    assert found["job-root"] == (repo / "job-root" / "model").resolve() and found["v2"] == repo / "v2.tar.gz"

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no hyperparams.json and no model.tar.gz, and none of its"):
        find_models(tmp_path / "empty")
    with pytest.raises(UserError, match="There is no model at"):
        find_models(tmp_path / "missing")


def test_a_request_names_its_model_as_sagemaker_does_and_an_unknown_name_is_a_404_sentence(tmp_path):
    repository = repository_of(tmp_path, ["v1", "v2"])
    assert repository.default == "v1"  # the first name, sorted
    assert [repository.resolve(name) for name in (None, "", "v2", "v2.tar.gz", "v2.tgz", " v1 ")] == [
        "v1",
        "v1",
        "v2",
        "v2",
        "v2",
        "v1",
    ]
    with pytest.raises(UnknownModel) as refused:
        repository.resolve("../v1\n#quality_metric: 1")
    assert refused.value.http_status == 404
    assert str(refused.value) == ("There is no model '../v1\\n\\x23quality_metric: 1' here; the models are 'v1', 'v2'")
    assert repository_of(tmp_path, ["v1", "v2"], default="v2").default == "v2"
    with pytest.raises(UserError, match="The default model 'v9' is not one of the models served: 'v1', 'v2'"):
        repository_of(tmp_path, ["v1", "v2"], default="v9")
    assert from_environment({"SEMSEG_DEFAULT_MODEL": " v2 "}).default_model == "v2"
    with pytest.raises(UserError, match="SEMSEG_MAX_LOADED_MODELS"):
        from_environment({"SEMSEG_MAX_LOADED_MODELS": "0"})


def test_models_load_when_first_asked_for_and_the_least_recently_used_is_unloaded_past_the_budget(tmp_path):
    repository = repository_of(tmp_path, ["a", "b", "c"], max_loaded=2)
    loader = repository._loader
    assert repository.loaded() == [] and loader.loads == []
    first_a = weakref.ref(repository.get("a"))
    repository.get("b")
    assert repository.get("a") is first_a() and loader.loads == ["a", "b"]  # loaded once, then held
    repository.get("c")  # b is the least recently used now
    assert repository.loaded() == ["a", "c"] and loader.loads == ["a", "b", "c"]
    repository.get("b")
    assert repository.loaded() == ["c", "b"] and loader.loads == ["a", "b", "c", "b"]
    gc.collect()
    assert first_a() is None  # an unloaded model's memory is really given back
    assert [(s.name, s.loaded, s.default) for s in repository.status()] == [
        ("a", False, True),
        ("b", True, False),
        ("c", True, False),
    ]


def test_under_concurrent_requests_the_loaded_models_never_exceed_the_budget(tmp_path):
    names = ["m0", "m1", "m2", "m3"]
    repository = repository_of(tmp_path, names, max_loaded=2)
    most_loaded, problems = [0], []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(12):
            name = rng.choice(names)
            try:
                predictor = repository.get(name)
                assert predictor.engine.winner == names.index(name)
                most_loaded[0] = max(most_loaded[0], len(repository.loaded()))
            except Exception as exc:  # noqa: BLE001 - collected for the assertion below
                problems.append(exc)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not problems and not any(thread.is_alive() for thread in threads)
    assert most_loaded[0] <= 2 and len(repository.loaded()) <= 2
    assert repository._loader.most_running == 1  # one load at a time per worker


def test_a_model_that_cannot_be_loaded_answers_503_and_the_others_still_answer(tmp_path):
    repository = repository_of(tmp_path, ["good", "broken"], failing=("broken",), default="good")
    client = create_app(ServingSettings(), repository=repository).test_client()
    for _ in range(2):
        answer = client.post("/invocations", data=png(), headers={"X-Amzn-SageMaker-Target-Model": "broken"})
        assert answer.status_code == 503
        assert answer.get_json()["error"] == "The model 'broken' could not be loaded: its weights of broken are damaged"
    assert repository._loader.loads.count("broken") == 1  # remembered, not retried on every request
    assert client.post("/invocations", data=png()).status_code == 200
    listed = client.get("/models").get_json()
    assert listed["models"][0] == {
        "name": "broken",
        "default": False,
        "loaded": False,
        "error": "The model 'broken' could not be loaded: its weights of broken are damaged",
    }


def test_the_app_answers_with_the_model_the_header_or_query_names(tmp_path):
    repository = repository_of(tmp_path, ["v1", "v2", "v3"])
    client = create_app(ServingSettings(), repository=repository).test_client()
    assert client.get("/models").get_json() == {
        "default": "v1",
        "max_loaded": 2,
        "models": [
            {"name": "v1", "default": True, "loaded": False, "error": None},
            {"name": "v2", "default": False, "loaded": False, "error": None},
            {"name": "v3", "default": False, "loaded": False, "error": None},
        ],
    }
    for header, expected in ((None, "v1"), ("v2", "v2"), ("v3.tar.gz", "v3")):
        headers = {"Accept": "application/json"}
        if header:
            headers["X-Amzn-SageMaker-Target-Model"] = header
        answer = client.post("/invocations", data=png(), headers=headers)
        assert answer.status_code == 200 and answer.headers["X-Semseg-Model"] == expected
        body = answer.get_json()
        assert body["classes"][0] == f"{expected}-0"
        assert set(np.ravel(body["mask"])) == {["v1", "v2", "v3"].index(expected)}
    assert client.get("/classes?model=v2").get_json()["classes"][0]["name"] == "v2-0"
    assert client.get("/classes", headers={"X-Amzn-SageMaker-Target-Model": "v3"}).get_json()["classes"][0]["name"] == (
        "v3-0"
    )
    unknown = client.post("/invocations", data=png(), headers={"X-Amzn-SageMaker-Target-Model": "v4"})
    assert unknown.status_code == 404 and unknown.get_json()["error"].startswith("There is no model 'v4' here")
    runtime = client.post(  # boto3's invoke_endpoint(TargetModel="v2.tar.gz") sends the same header
        "/endpoints/any/invocations", data=png(), headers={"X-Amzn-SageMaker-Target-Model": "v2.tar.gz"}
    )
    assert runtime.status_code == 200 and runtime.headers["X-Semseg-Model"] == "v2"


# ---- real models through gunicorn ----------------------------------------------------------------

RENAMED = classes.ClassTable(("ground", "round", "square", "pointy"), classes.voc_colors(4))


def worker_rss_mb(server) -> float:
    (pid,) = server.worker_pids()
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


@pytest.mark.slow
def test_real_models_are_picked_by_header_and_a_worker_holds_at_most_its_budget(tmp_path_factory):
    from harness.serving_helpers import encoded, model_repository_server, sample_image

    from semseg.sample_data import CLASSES as NAMED

    tables = {"v1": NAMED, "v2": RENAMED, "v3": NAMED}
    body = encoded(sample_image(90, 70, seed=3))
    with model_repository_server(tmp_path_factory, tables, SEMSEG_MAX_LOADED_MODELS="2") as server:
        assert server.wait_until_up().status_code == 200
        listed = requests.get(server.url + "/models", timeout=30).json()
        assert [(m["name"], m["loaded"]) for m in listed["models"]] == [("v1", True), ("v2", False), ("v3", False)]
        resting_mb = worker_rss_mb(server)

        answers = {}
        for name in ("v1", None, "v2"):
            answer = server.invoke(body, accept="application/json", model=name)
            assert answer.status_code == 200, answer.text
            answers[name] = answer.json()
        assert answers["v1"]["classes"] == list(NAMED.names) and answers["v2"]["classes"] == list(RENAMED.names)
        assert answers[None] == answers["v1"]  # no header: the default model
        assert answers["v1"]["mask"] == answers["v2"]["mask"]  # the same weights under two class tables
        two_loaded_mb = worker_rss_mb(server)

        rss, loaded = [], []
        for _ in range(3):  # each round loads v3 (unloading v1), v1 (unloading v2), v2 (unloading v3)
            for name in ("v3", "v1", "v2"):
                assert server.invoke(body, model=name).status_code == 200
                state = requests.get(server.url + "/models", timeout=30).json()["models"]
                loaded.append(sum(m["loaded"] for m in state))
                rss.append(worker_rss_mb(server))
        assert max(loaded) == 2, loaded
        assert server.log().count("Unloaded the model") == 9
        one_model_mb = max(two_loaded_mb - resting_mb, 1.0)
        print(f"worker RSS: {resting_mb:.0f} MB with one model, {two_loaded_mb:.0f} MB with two, after each swap {rss}")
        # Nine loads and unloads later the worker holds what two models take plus at most about one
        # model's worth of allocator slack, and that does not grow from round to round: an unloaded
        # model's memory does not pile up.
        assert max(rss) <= two_loaded_mb + 1.5 * one_model_mb, (resting_mb, two_loaded_mb, rss)
        assert max(rss[6:]) <= max(rss[:3]) + 0.5 * one_model_mb, (resting_mb, two_loaded_mb, rss)
