# Every target builds on `make install`, which creates .venv/ with the package and its pinned dependencies.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: install demo lint test test-fast test-long test-container bench clean image-cpu image-gpu docker-train docker-serve

install: $(BIN)/train

$(BIN)/train: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[test]'
	# gluoncv declares the GUI build of opencv; the headless one installed above serves it.
	$(PIP) --no-deps gluoncv
	# tests/ on the environment's path, so `import harness` works from tests/, bench/ and their child processes.
	echo "$(CURDIR)/tests" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/semseg-harness.pth"
	touch $(BIN)/train

demo: install
	$(BIN)/semseg demo --workdir demo

# ruff's lint rules and formatting, as configured in pyproject.toml;
LINTED := src serve tests bench container

# The import contracts in pyproject.toml (the layers of src/semseg); gunicorn's own check of the
# server's configuration module.
lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports
	$(BIN)/python -m gunicorn --check-config --config python:serve.gunicorn_conf

# What CI runs: everything but the long forms (learning bars for each loss and for the CVAT zip) of
# checks whose short forms run here.
test: install
	$(BIN)/pytest -q -m "not long"

test-fast: install
	$(BIN)/pytest -q -m "not slow and not container and not long"

test-long: install
	$(BIN)/pytest -q -m long

# Container tests: start a Docker engine if none answers (tests/container/engine.sh), build the CPU image,
# run it as SageMaker does; lint the Dockerfiles.
test-container: install
	$(BIN)/pytest -q tests/container

bench: install
	$(BIN)/python bench/train_speed.py

clean:
	rm -rf $(VENV) demo build *.egg-info src/*.egg-info

# Images. The build fetches GluonCV's ImageNet backbones; PRETRAINED_WEIGHTS=skip builds without them
# where the builder has no network to them (use_pretrained_model=True then fails saying so).
# Without a Docker engine here: eval "$$(tests/container/engine.sh start)" first.
IMAGE ?= semseg
PRETRAINED_WEIGHTS ?= stage
DOCKER_BUILD := docker build --network host --build-arg PRETRAINED_WEIGHTS=$(PRETRAINED_WEIGHTS)

image-cpu:
	$(DOCKER_BUILD) -f Dockerfile.cpu -t $(IMAGE):cpu .

image-gpu:
	$(DOCKER_BUILD) -f Dockerfile.gpu -t $(IMAGE):gpu .

# Run an image on a local directory laid out as /opt/ml (the demo's by default; `.venv/bin/semseg
# sample-data DIR` makes one). VARIANT=gpu runs the GPU image on all GPUs; PORT is where serve listens.
ML ?= demo/opt_ml
VARIANT ?= cpu
PORT ?= 8080
DOCKER_RUN = docker run --rm --network host $(if $(filter gpu,$(VARIANT)),--gpus all)

docker-train:
	@test -d $(ML)/input/config || { echo "$(ML) is not an /opt/ml tree: set ML=DIR, or make one with .venv/bin/semseg sample-data $(ML)"; exit 1; }
	$(DOCKER_RUN) -v $(abspath $(ML)):/opt/ml $(IMAGE):$(VARIANT) train

docker-serve:
	$(DOCKER_RUN) -e SAGEMAKER_BIND_TO_PORT=$(PORT) -v $(abspath $(ML))/model:/opt/ml/model $(IMAGE):$(VARIANT) serve
