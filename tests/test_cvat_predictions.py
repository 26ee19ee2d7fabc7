"""Predictions as a CVAT import: ``semseg predict --format cvat`` writes a "Segmentation mask 1.1" zip
that follows the layout rules of CVAT's export (labelmap.txt in class-id order under CVAT's comment
line, RGB class masks, instance masks by connected region, the ImageSets list, names as the inputs
name their images) and that the ``dataset`` channel reads back to the very masks predicted.

The fast tests write the zip from known class ids, or run the command against a stand-in server on
127.0.0.1 (its answer to an image is a function of the image, so a test knows every mask); the slow
one runs it on the session's trained model and compares with the PNG answers ``predict`` writes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from harness.cvat_export import COLOURS, NAMES, sample
from harness.stand_in_http import predict, serving
from PIL import Image
from test_dataset_channel import prepared_masks

from semseg import classes, paths
from semseg.classes import ClassTable
from semseg.data import dataset_channel
from semseg.data.dataset_channel import cvat_zip, labelmap_txt, layouts
from semseg.errors import UserError

TABLE = ClassTable(NAMES, COLOURS)


@pytest.fixture
def job(tmp_path, monkeypatch):
    """An /opt/ml tree at tmp_path/ml with an empty 'dataset' channel."""
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "ml"))
    paths.channel_dir("dataset").mkdir(parents=True)
    return tmp_path / "ml"


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def pixels(data: bytes) -> tuple[str, np.ndarray]:
    with Image.open(io.BytesIO(data)) as image:
        return image.mode, np.asarray(image)


def check_layout(found: dict[str, bytes], table: ClassTable, truth: dict[str, np.ndarray]) -> None:
    """The reference's rules for a Segmentation mask 1.1 zip, member by member."""
    labelmap = found["labelmap.txt"].decode()
    assert labelmap.splitlines()[0] == "# label:color_rgb:parts:actions"
    assert labelmap.splitlines()[1:] == [f"{n}:{','.join(map(str, c))}::" for n, c in zip(table.names, table.colors)]
    assert labelmap_txt.parse(labelmap, "labelmap.txt") == table
    assert found["ImageSets/Segmentation/default.txt"].decode() == "".join(f"{name}\n" for name in sorted(truth))
    images = {name for name in found if name.startswith("JPEGImages/")}
    assert {name.rsplit(".", 1)[0] for name in images} == {f"JPEGImages/{name}" for name in truth}
    background = table.names.index("background") if "background" in table.names else 0
    for name, ids in truth.items():
        mode, rgb = pixels(found[f"SegmentationClass/{name}.png"])
        assert mode == "RGB"
        np.testing.assert_array_equal(rgb, np.asarray(table.colors, dtype=np.uint8)[ids])
        mode, objects = pixels(found[f"SegmentationObject/{name}.png"])
        assert mode == "RGB"
        key = objects[..., 0].astype(np.int64) << 16 | objects[..., 1].astype(np.int64) << 8 | objects[..., 2]
        assert (key[ids == background] == 0).all() and (key[ids != background] != 0).all()
        regions, class_of = 0, {}  # instance colour -> its class
        for class_id in set(np.unique(ids).tolist()) - {background}:
            labelled, count = classes.regions(ids == class_id)
            regions += count
            for region in range(1, count + 1):  # one colour per region, of one class
                (colour,) = np.unique(key[labelled == region])
                assert class_of.setdefault(colour, class_id) == class_id
        # a colour per region, up to the instance colours there are (past them, regions join their class's largest)
        assert len(class_of) == min(regions, cvat_zip.MAX_INSTANCES)
        voc = {c[0] << 16 | c[1] << 8 | c[2] for c in classes.voc_colors()[1 : cvat_zip.MAX_INSTANCES + 1]}
        assert set(class_of) <= voc


def sample_named(count: int, seed: int = 0) -> dict[str, tuple[bytes, np.ndarray]]:
    """Sample pairs named as a task made from folders names its frames: some in sub-folders."""
    pairs = sample(count, seed)
    return {(f"site {i % 2}/day/img_{i}" if i % 3 else f"img_{i}"): pair for i, pair in enumerate(pairs)}


def test_the_zip_follows_cvats_layout_and_reads_back_through_the_dataset_channel_to_the_same_masks(job):
    named = sample_named(6)

    def fill(writer):
        for name, (jpeg, ids) in named.items():
            writer.add(name, ids, jpeg, ".jpg")
        return len(named)

    target = job / "input" / "data" / "dataset" / "predictions.zip"
    assert cvat_zip.write(target, TABLE, "the test's table", fill) == 6
    found = members(target)
    truth = {name: ids for name, (_, ids) in named.items()}
    check_layout(found, TABLE, truth)
    assert all(found[f"JPEGImages/{name}.jpg"] == jpeg for name, (jpeg, _) in named.items())
    assert [p.name for p in target.parent.iterdir()] == ["predictions.zip"]  # no temporary file left

    assert dataset_channel.implied_hyperparameters({}) == {"num_training_samples": "5", "num_classes": "4"}
    dataset_channel.prepare({"num_classes": 4, "validation_fraction": 0.2, "_seed": 0})
    read_back = {**prepared_masks("train"), **prepared_masks("validation")}
    assert sorted(read_back) == sorted(name.replace(" ", "_") for name in truth)  # prepared files' safe names
    for name, ids in truth.items():
        np.testing.assert_array_equal(read_back[name.replace(" ", "_")], ids)
    assert classes.load(paths.model_dir(), 4) == TABLE


def flat_png(shape: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((*shape, 3), 90, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_class_table_whose_background_is_not_first_keeps_every_id_and_has_no_background_objects(job):
    table = ClassTable(("car", "background", "road"), ((250, 50, 83), (0, 0, 0), (36, 179, 83)))  # CVAT's sorting
    rng = np.random.RandomState(1)
    truth = {"a": rng.randint(0, 3, (24, 40)).astype(np.uint8), "b/c": np.ones((30, 20), dtype=np.uint8)}
    target = paths.channel_dir("dataset") / "p.zip"

    def fill(writer):
        for name, ids in truth.items():
            writer.add(name, ids, flat_png(ids.shape), ".png")

    cvat_zip.write(target, table, "t", fill)
    check_layout(members(target), table, truth)
    dataset_channel.prepare({"num_classes": 3, "validation_fraction": 0.5, "_seed": 0})
    for name, ids in {**prepared_masks("train"), **prepared_masks("validation")}.items():
        np.testing.assert_array_equal(ids, truth[name])


def test_more_regions_than_instance_colours_keep_every_pixel_in_an_instance_of_its_own_class():
    ids = np.zeros((64, 64), dtype=np.uint8)
    ids[::2, ::2] = 1 + (np.arange(32)[:, None] + np.arange(32)[None, :]) % 2  # 1024 one-pixel regions
    ids[40:, 40:] = 3
    objects = cvat_zip.instances(ids, background=0)
    assert objects.max() == cvat_zip.MAX_INSTANCES and (objects[ids == 0] == 0).all() and (objects[ids > 0] > 0).all()
    for number in np.unique(objects[objects > 0]):
        assert len(np.unique(ids[objects == number])) == 1  # an instance is of one class
    assert len(np.unique(objects[ids == 3])) == 1  # the one region of class 3 is numbered


@pytest.mark.parametrize("name", ["road:main", "#car", " car", "car\n"])
def test_a_class_name_labelmap_txt_cannot_hold_is_refused_before_anything_is_written(tmp_path, name):
    table = ClassTable(("background", name), ((0, 0, 0), (1, 2, 3)))
    with pytest.raises(UserError) as error:
        cvat_zip.write(tmp_path / "p.zip", table, "the model's class table", lambda writer: None)
    assert "of the model's class table cannot be a line of labelmap.txt" in str(error.value)
    assert "\n" not in str(error.value) and list(tmp_path.iterdir()) == []


# A stand-in server: /classes, /invocations, and SageMaker runtime's route, which boto3's
# invoke_endpoint reaches through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME.
SERVED = ClassTable(("background", "dark", "light"), ((0, 0, 0), (10, 20, 30), (200, 100, 50)))


def answer(image: bytes) -> np.ndarray:
    """The stand-in's class ids of an image: its gray level in three bands."""
    with Image.open(io.BytesIO(image)) as picture:
        return np.minimum(np.asarray(picture.convert("L")) // 86, 2).astype(np.uint8)


class _StandIn(BaseHTTPRequestHandler):
    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's name)
        self._reply(200, json.dumps(SERVED.to_json()).encode(), "application/json")

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            ids = answer(body)
        except OSError:
            return self._reply(400, b'{"error": "The image could not be decoded"}', "application/json")
        if self.headers.get("Accept") == "application/json":
            document = {"shape": list(ids.shape), "classes": list(SERVED.names), "mask": ids.tolist()}
            return self._reply(200, json.dumps(document).encode(), "application/json")
        mask = Image.fromarray(ids)
        mask.putpalette(SERVED.palette())
        buffer = io.BytesIO()
        mask.save(buffer, format="PNG")
        self._reply(200, buffer.getvalue(), "image/png")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def stand_in():
    with serving(_StandIn) as url:
        yield url


def image_folder(root: Path, count: int = 5) -> dict[str, bytes]:
    """Sample JPEGs and PNGs, some in sub-folders, and one broken file; relative name -> bytes."""
    written = {}
    for i, (jpeg, _) in enumerate(sample(count, seed=3)):
        name = f"street {i % 2}/frame_{i}.jpg" if i % 2 else f"frame_{i}.png"
        data = jpeg
        if name.endswith(".png"):
            buffer = io.BytesIO()
            Image.open(io.BytesIO(jpeg)).save(buffer, format="PNG")
            data = buffer.getvalue()
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        written[name] = data
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return written


def check_command_zip(path: Path, written: dict[str, bytes]) -> None:
    truth = {name.rsplit(".", 1)[0]: answer(data) for name, data in written.items()}
    found = members(path)
    check_layout(found, SERVED, truth)
    assert {f"JPEGImages/{name}" for name in written} == {name for name in found if name.startswith("JPEGImages/")}
    assert all(found[f"JPEGImages/{name}"] == data for name, data in written.items())


def test_predict_format_cvat_through_a_server_leaves_the_bad_image_out_and_says_so(stand_in, tmp_path):
    written = image_folder(tmp_path / "in")
    output = tmp_path / "out" / "preds.zip"

    run = predict("--input", str(tmp_path / "in"), "--output", str(output), "--format", "cvat", "--url", stand_in)

    assert run.returncode == 1, run.stdout + run.stderr
    assert f"5 predicted into {output} (CVAT Segmentation mask 1.1), 1 failed" in run.stdout
    assert "FAILED broken.jpg: HTTP 400: The image could not be decoded" in run.stdout
    check_command_zip(output, written)
    assert [p.name for p in output.parent.iterdir()] == ["preds.zip"]


def test_predict_format_cvat_through_an_endpoint_takes_the_class_table_from_its_answers(stand_in, tmp_path):
    written = image_folder(tmp_path / "in", count=3)
    (tmp_path / "in" / "broken.jpg").unlink()
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": stand_in,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    output = tmp_path / "preds.zip"

    run = predict(
        "--input", str(tmp_path / "in"), "--output", str(output), "--format", "cvat", "--endpoint", "seg", env=env
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert f"3 predicted into {output} (CVAT Segmentation mask 1.1), 0 failed" in run.stdout
    check_command_zip(output, written)


@pytest.mark.parametrize(
    "files, output, flags, sentence",
    [
        (["a.jpg", "a.png"], "preds.zip", [], "The inputs 'a.jpg' and 'a.png' would both be the image 'a' of the CVAT"),
        (["a.jpg", "b .jpg"], "preds.zip", [], "The file name 'b .jpg' under"),
        (["a.jpg"], "preds.zip", ["--accept", "application/json"], "--accept does not go with --format cvat"),
        (["a.jpg"], "masks", [], "--format cvat writes one zip: give --output a local file name ending in .zip"),
        (["a.jpg"], "in/preds.zip", [], "is inside --input"),
    ],
    ids=["one-name", "space", "accept", "folder", "inside"],
)
def test_what_a_cvat_zip_cannot_hold_is_refused_in_one_sentence_before_anything_is_written(
    stand_in, tmp_path, files, output, flags, sentence
):
    (tmp_path / "in").mkdir()
    for name in files:
        (tmp_path / "in" / name).write_bytes(b"never read")

    run = predict(
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / output),
        "--format",
        "cvat",
        "--url",
        stand_in,
        *flags,
    )

    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.strip().splitlines() == [run.stdout.strip()] and sentence in run.stdout, run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "in",
        *(f"in/{n}" for n in sorted(files)),
    ]


def test_when_no_image_is_answered_no_zip_is_written_and_an_old_one_stays(stand_in, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "preds.zip").write_bytes(b"the zip of an earlier run")

    run = predict(
        "--input", str(tmp_path / "in"), "--output", str(tmp_path / "preds.zip"), "--format", "cvat", "--url", stand_in
    )

    assert run.returncode == 1 and "0 predicted, 1 failed: nothing written" in run.stdout, run.stdout + run.stderr
    assert (tmp_path / "preds.zip").read_bytes() == b"the zip of an earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "preds.zip"]


@pytest.mark.slow  # the session's trained model (learnt_model)
def test_the_zip_of_a_trained_model_holds_the_masks_predict_writes_and_trains_as_it_is(learnt_model, tmp_path, job):
    images = tmp_path / "photos"
    for i, (jpeg, _) in enumerate(sample(4, seed=7)):
        (images / ("sub" if i % 2 else "") / f"p{i}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (images / ("sub" if i % 2 else "") / f"p{i}.jpg").write_bytes(jpeg)
    model = str(learnt_model.root)
    output = paths.channel_dir("dataset") / "preds.zip"

    cvat = predict("--input", str(images), "--output", str(output), "--format", "cvat", "--model", model)
    files = predict("--input", str(images), "--output", str(tmp_path / "masks"), "--model", model)

    assert cvat.returncode == 0 and files.returncode == 0, cvat.stdout + cvat.stderr + files.stdout + files.stderr
    answers = {}
    for path in sorted((tmp_path / "masks").rglob("*.png")):
        answers[path.relative_to(tmp_path / "masks").with_suffix("").as_posix()] = pixels(path.read_bytes())[1]
    assert sorted(answers) == ["p0", "p2", "sub/p1", "sub/p3"]
    check_layout(members(output), classes.load(learnt_model.model_dir, 4), answers)
    layout = layouts.find_layout(sorted(members(output)), lambda name: members(output)[name].decode(), output)
    assert layout.kind == "CVAT Segmentation Mask 1.1" and sorted(layout.subsets) == ["default"]
    dataset_channel.prepare({"num_classes": 4, "validation_fraction": 0.25, "_seed": 0})
    read_back = {**prepared_masks("train"), **prepared_masks("validation")}
    assert sorted(read_back) == sorted(answers)
    for name, ids in answers.items():
        np.testing.assert_array_equal(read_back[name], ids)


DATUMARO_PYTHON = os.environ.get("SEMSEG_DATUMARO_PYTHON")  # a venv's python with datumaro==1.12.0 (not in CI)
DATUMARO_READS = """
import json, sys
import numpy as np
from PIL import Image
import datumaro as dm

dataset = dm.Dataset.import_from(sys.argv[1], "voc_segmentation")
names = [label.name for label in dataset.categories()[dm.AnnotationType.label]]
found = {}
for item in dataset:
    ids, groups = np.full(item.media.data.shape[:2], 255, dtype=np.uint8), set()
    for mask in item.annotations:
        ids[mask.image.astype(bool)] = names.index(names[mask.label])
        groups.add(mask.group)
    Image.fromarray(ids).save(f"{sys.argv[2]}/{item.id.replace('/', '~')}.png")
    found[item.id] = {"subset": item.subset, "instances": len(groups)}
print(json.dumps({"names": names, "items": found}))
"""


@pytest.mark.skipif(DATUMARO_PYTHON is None, reason="SEMSEG_DATUMARO_PYTHON names no python with datumaro")
def test_cvats_dataset_library_imports_the_zip_as_the_same_masks_one_instance_per_region(tmp_path):
    named = sample_named(5, seed=4)
    target = tmp_path / "preds.zip"

    def fill(writer):
        for name, (jpeg, ids) in named.items():
            writer.add(name, ids, jpeg, ".jpg")

    cvat_zip.write(target, TABLE, "t", fill)
    with zipfile.ZipFile(target) as archive:
        archive.extractall(tmp_path / "unzipped")
    (tmp_path / "masks").mkdir()

    read = subprocess.run(
        [DATUMARO_PYTHON, "-c", DATUMARO_READS, str(tmp_path / "unzipped"), str(tmp_path / "masks")],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert read.returncode == 0, read.stderr[-3000:]
    result = json.loads(read.stdout.strip().splitlines()[-1])
    assert result["names"] == list(NAMES) and sorted(result["items"]) == sorted(named)
    for name, (_, ids) in named.items():
        background = ids == NAMES.index("background")
        regions = sum(classes.regions(ids == c)[1] for c in set(np.unique(ids).tolist()) - {0})
        assert result["items"][name] == {"subset": "default", "instances": min(regions, cvat_zip.MAX_INSTANCES)}
        read_back = pixels((tmp_path / "masks" / f"{name.replace('/', '~')}.png").read_bytes())[1]
        np.testing.assert_array_equal(read_back[~background], ids[~background])  # background: no annotation
        assert (read_back[background] == 255).all()
