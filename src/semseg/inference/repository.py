"""Several models in one server: each model by its name, loaded when first asked for, at most
``max_loaded`` of them held by a worker at once.

What the server's model directory holds decides what is served:

- one model (``hyperparams.json``, a single ``model.tar.gz``, or a job's /opt/ml root): that model,
  named after its directory;
- otherwise a *repository*: each sub-directory that holds a model, and each ``<name>.tar.gz`` (or
  ``.tgz``) file, is a model called ``<name>``.

A request names its model with SageMaker's multi-model header ``X-Amzn-SageMaker-Target-Model``
(``v2`` or ``v2.tar.gz``, as SageMaker's ``TargetModel`` names an archive); without it the default
model answers: ``$SEMSEG_DEFAULT_MODEL``, else the first name in sorted order. A requested name is
only ever looked up among the names found on disk, never joined to a path.

Memory: each loaded model holds its engine (about 0.2-0.6 GB for a ResNet-50 model,
docs/serving.md), so a worker keeps at most ``max_loaded`` models; asking for one more first
unloads the least recently used. Loads happen one at a time per worker, after that eviction, so the
loaded models never exceed the budget; a request already answering with an unloaded model keeps it
alive until its answer is written. A model that fails to load is remembered as failed with its
sentence (each retry would cost the load again) until the server restarts.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import names as outside
from .. import paths
from ..archives import MODEL_ARCHIVE_SUFFIXES
from ..errors import UserError
from ..model.artifacts import model_to_serve
from .predictor import Predictor
from .settings import ServingSettings

log = logging.getLogger(__name__)

TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"


class UnknownModel(UserError):
    http_status = 404


class ModelUnavailable(UserError):
    """The model exists but could not be loaded: the server's fault as far as the client can tell."""

    http_status = 503


def _archive_name(name: str) -> str | None:
    """``v2`` for ``v2.tar.gz`` or ``v2.tgz``; None for a name that is not an archive's."""
    for suffix in MODEL_ARCHIVE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _is_single_model(directory: Path) -> bool:
    if (directory / paths.HYPERPARAMS_FILE).exists() or (paths.model_dir(directory) / paths.HYPERPARAMS_FILE).exists():
        return True
    archives = [entry for entry in directory.iterdir() if entry.is_file() and _archive_name(entry.name)]
    return len(archives) == 1 and not any(entry.is_dir() for entry in directory.iterdir())


def find_models(directory: Path) -> dict[str, Path]:
    """Every model ``directory`` serves, by name (see the module's docstring); a ``UserError`` when none."""
    directory = Path(directory)
    if not directory.exists():
        model_to_serve(directory)  # its sentence: what may be served
    if directory.is_file():
        return {_archive_name(directory.name) or directory.name: directory}
    if _is_single_model(directory):
        return {directory.name: model_to_serve(directory)}
    found: dict[str, Path] = {}
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and _archive_name(entry.name):
            found[_archive_name(entry.name)] = entry
        elif entry.is_dir():
            try:
                found[entry.name] = model_to_serve(entry)
            except UserError:
                log.warning("Not a model, not served: %s", outside.shown(entry))
    if not found:
        raise UserError(
            f"The model directory {directory} has no {paths.HYPERPARAMS_FILE} and no model.tar.gz, and none of "
            "its sub-directories or .tar.gz files is a model"
        )
    return found


@dataclass(frozen=True)
class ModelStatus:
    name: str
    default: bool
    loaded: bool  # in the worker that answered
    error: str | None

    def to_json(self) -> dict:
        return {"name": self.name, "default": self.default, "loaded": self.loaded, "error": self.error}


Loader = Callable[[Path, ServingSettings], Predictor]
Listener = Callable[[str, Predictor], None]


def _ignore(name: str, predictor: Predictor) -> None:
    pass


class ModelRepository:
    """The models of one worker, by name; ``get`` loads lazily and unloads the least recently used."""

    def __init__(
        self,
        models: dict[str, Path],
        settings: ServingSettings,
        default: str | None = None,
        loader: Loader = Predictor.from_model_dir,
        on_load: Listener = _ignore,
        on_unload: Listener = _ignore,
    ):
        """``on_load`` and ``on_unload`` hear of each model loaded and unloaded (the server's figures)."""
        if not models:
            raise UserError("There is no model to serve")
        self.models = dict(sorted(models.items()))
        if default is not None and default not in self.models:
            raise UserError(
                f"The default model '{outside.shown(default)}' is not one of the models served: {self.listing()}"
            )
        self.default = default or next(iter(self.models))
        self.settings = settings
        self.max_loaded = settings.max_loaded_models
        self._loader = loader
        self._on_load, self._on_unload = on_load, on_unload
        self._loaded: OrderedDict[str, Predictor] = OrderedDict()  # least recently used first
        self._failed: dict[str, str] = {}
        self._state = threading.Lock()  # guards _loaded and _failed; never held while loading
        self._loading = threading.Lock()  # one load at a time: the budget holds while it runs

    def _called(self, name: str) -> str:
        """How a sentence names model ``name``: "The model" where it is the only one."""
        return "The model" if len(self.models) == 1 else f"The model '{outside.shown(name)}'"

    def listing(self) -> str:
        return ", ".join(f"'{outside.shown(name)}'" for name in self.models)

    def resolve(self, requested: str | None) -> str:
        """The name of the model a request asks for (its header's value, or None for the default)."""
        if requested is None or not requested.strip():
            return self.default
        requested = requested.strip()
        for candidate in (requested, _archive_name(requested)):
            if candidate in self.models:
                return candidate
        raise UnknownModel(
            f"There is no model '{outside.shown(requested[:200])}' here; the models are {self.listing()}"
        )

    def get(self, name: str) -> Predictor:
        """The predictor of model ``name`` (a resolved name), loaded now if it is not loaded."""
        with self._state:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        with self._loading:
            with self._state:  # loaded by another thread while this one waited
                if name in self._loaded:
                    self._loaded.move_to_end(name)
                    return self._loaded[name]
                if name in self._failed:
                    raise ModelUnavailable(self._failed[name])
                self._evict(self.max_loaded - 1)
            gc.collect()  # the evicted engines' memory goes back before the next one is allocated
            predictor = self._load(name)
            with self._state:
                self._loaded[name] = predictor
            self._on_load(name, predictor)
        return predictor

    def _evict(self, keep: int) -> None:
        while len(self._loaded) > keep:
            evicted, predictor = self._loaded.popitem(last=False)
            self._on_unload(evicted, predictor)
            log.info("Unloaded the model %s (at most %d loaded per worker)", outside.shown(evicted), self.max_loaded)

    def _load(self, name: str) -> Predictor:
        try:
            return self._loader(self.models[name], self.settings)
        except UserError as exc:
            reason = f"{self._called(name)} could not be loaded: {exc}"
        except Exception as exc:  # a bug, or a file the engine could not read: the trace goes to the log only
            log.exception("The model %s could not be loaded", outside.shown(name))
            reason = f"{self._called(name)} could not be loaded ({type(exc).__name__}); the server log has the details"
        log.error("%s", reason)
        with self._state:
            self._failed[name] = reason
        raise ModelUnavailable(reason)

    def loaded(self) -> list[str]:
        with self._state:
            return list(self._loaded)

    def status(self) -> list[ModelStatus]:
        with self._state:
            return [
                ModelStatus(name, name == self.default, name in self._loaded, self._failed.get(name))
                for name in self.models
            ]
