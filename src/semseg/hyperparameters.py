"""The hyperparameter table (names, types, defaults, ranges, choices) and the parser over it.

This table is the single source of truth for every hyperparameter the ``train`` command knows,
public ones with the names and defaults of SageMaker's built-in algorithm and ``_``-prefixed
internal ones. SageMaker hands every value over as a string; framework estimators JSON-encode
them first (``"\\"fcn\\""``). Both forms are accepted. Unknown keys are tolerated and logged,
because tuning jobs and the SDK add their own (``_tuning_objective_metric``, ``sagemaker_*``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import UserError

log = logging.getLogger(__name__)

ALGORITHMS = ("fcn", "psp", "deeplab", "unet", "deeplabv3plus", "fastscnn")
BACKBONES = ("resnet-18", "resnet-34", "resnet-50", "resnet-101")
# The backbones each algorithm is built on; fastscnn has its own and ignores the hyperparameter.
ALGORITHM_BACKBONES = {
    "fcn": ("resnet-50", "resnet-101"),
    "psp": ("resnet-50", "resnet-101"),
    "deeplab": ("resnet-50", "resnet-101"),
    "unet": BACKBONES,
    "deeplabv3plus": BACKBONES,
    "fastscnn": (),
}
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad", "nag")
LR_SCHEDULERS = ("poly", "cosine", "step")
LOSSES = ("cross_entropy", "focal", "dice", "cross_entropy+dice")
CLASS_WEIGHT_RULES = ("median_frequency", "sqrt_median_frequency", "log_inverse")  # train.losses.WEIGHT_RULES
AUGMENTATIONS = ("default", "strong")  # default: the built-in's recipe; strong: data.transforms.strong_train_transform
BACKBONE_ALIASES = {name.replace("-", ""): name for name in BACKBONES}  # resnet50 means resnet-50

# Keys that define the network: they must agree between a model and the run that continues it.
ARCHITECTURE_KEYS = ("backbone", "algorithm", "crop_size", "num_classes")


@dataclass(frozen=True)
class Spec:
    """One hyperparameter: its type, default (None = no default), and what values are valid."""

    kind: str  # "str", "int", "float", "bool", "epochs" (comma-separated list of ints), "class_weights"
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: value must be > low (not >=)
    high_open: bool = False  # True: value must be < high (not <=)


TABLE: dict[str, Spec] = {
    "backbone": Spec("str", "resnet-50", choices=BACKBONES),
    "use_pretrained_model": Spec("bool", True),
    "algorithm": Spec("str", "fcn", choices=ALGORITHMS),
    "num_classes": Spec("int", required=True, low=2, high=254),
    "num_training_samples": Spec("int", required=True, low=1),
    "base_size": Spec("int", 520, low=16, low_open=True),
    "crop_size": Spec("int", 240, low=16, low_open=True),
    "epochs": Spec("int", 10, low=1),
    "learning_rate": Spec("float", 0.001, low=0, high=1, low_open=True),
    "lr_scheduler": Spec("str", "poly", choices=LR_SCHEDULERS),
    "lr_scheduler_factor": Spec("float", 0.1, low=0, high=1),
    "lr_scheduler_step": Spec("epochs", None),
    "mini_batch_size": Spec("int", 16, low=1),
    "validation_mini_batch_size": Spec("int", 16, low=1),
    "optimizer": Spec("str", "sgd", choices=OPTIMIZERS),
    "momentum": Spec("float", 0.9, low=0, high=1, low_open=True),
    "weight_decay": Spec("float", 0.0001, low=0, high=1, high_open=True),
    "gamma1": Spec("float", 0.9, low=0, high=1),
    "gamma2": Spec("float", 0.9, low=0, high=1),
    "early_stopping": Spec("bool", False),
    "early_stopping_min_epochs": Spec("int", 5, low=0),
    "early_stopping_patience": Spec("int", 4, low=1),
    "early_stopping_tolerance": Spec("float", 0.0, low=0, high=1),
    "syncbn": Spec("bool", False),
    # Ours, beyond the built-in (whose one loss is the default): the loss and its settings.
    "loss": Spec("str", "cross_entropy", choices=LOSSES),
    "focal_gamma": Spec("float", 2.0, low=0, high=10),
    "dice_weight": Spec("float", 1.0, low=0, low_open=True),
    "class_weights": Spec("class_weights", "none"),
    # Ours: guards against divergence. clip_gradient bounds each gradient element (MXNet's optimizer
    # option; 0 = off); lr_warmup_epochs ramps the learning rate up linearly from 0 (0 = off).
    "clip_gradient": Spec("float", 0.0, low=0),
    "lr_warmup_epochs": Spec("float", 0.0, low=0),
    # Internal keys of the built-in's default configuration, accepted with the same defaults.
    "_aux_loss": Spec("bool", True),
    "_aux_weight": Spec("float", 0.5, low=0),
    "_workers": Spec("int", 16, low=0),
    "_logging_frequency": Spec("int", 20, low=1),
    "_hybrid": Spec("bool", True),  # ours: True (the built-in's False); measured faster, docs/performance.md
    "_kvstore": Spec("str", "device"),
    "_num_kv_servers": Spec("str", "auto"),
    "_augmentation_type": Spec("str", "default", choices=AUGMENTATIONS),
    # Ours: the pieces of the strong recipe (read only when _augmentation_type is strong; 0 turns one off).
    "augment_horizontal_flip": Spec("float", 0.5, low=0, high=1),  # probability (the built-in's own 0.5)
    "augment_vertical_flip": Spec("float", 0.5, low=0, high=1),  # probability
    "augment_rotate90": Spec("float", 0.5, low=0, high=1),  # probability of a quarter, half or three-quarter turn
    "augment_rotation_degrees": Spec("float", 15.0, low=0, high=180),  # a free turn within +- this
    "augment_color_jitter": Spec("float", 0.3, low=0, high=1),  # brightness, contrast, saturation within 1 +- this
    "augment_hue": Spec("float", 0.05, low=0, high=0.5),  # hue shift within +- this share of the colour wheel
    "augment_scale_min": Spec("float", 0.25, low=0, high=4, low_open=True),  # long side x base_size, lowest
    "augment_scale_max": Spec("float", 2.5, low=0, high=4, low_open=True),  # and highest
    # Ours: bfloat16 and auto (bfloat16 where AMX makes it faster) beside the built-in's float32, which stays the
    # default: the learning test fell just short of its bar in bfloat16 (docs/performance.md).
    "precision_dtype": Spec("str", "float32", choices=("float32", "bfloat16", "auto")),
    # Ours: the seed of every random choice in training, for reproducible runs.
    "_seed": Spec("int", 0, low=0),
    # Ours: write the ONNX export (model.onnx) at the end of training; without it the endpoint serves through MXNet.
    "_onnx": Spec("bool", True),
    # Ours: write the int8 copy of the ONNX export at the end of training (semseg.model.quantize).
    "_int8": Spec("bool", True),
    # Ours: score the validation split once more at the end of training, each image at its own size through the
    # engine the endpoint serves (semseg.train.native_scores); a held-out test split is scored either way.
    "_native_validation": Spec("bool", True),
    # Ours: consecutive iterations with a non-finite loss or gradient (each skipped) that end the job.
    "_max_nonfinite_iterations": Spec("int", 10, low=1),
    # Ours, Pipe mode: seconds to wait for the FIFO <channel>_<epoch> to appear before failing, and how
    # many image/mask pairs the train stream is shuffled through (1 keeps the stream's order).
    "_pipe_wait_seconds": Spec("int", 600, low=1),
    "_pipe_shuffle_buffer": Spec("int", 256, low=1),
    # Ours: multi-host training. The parameter-server scheduler listens on hosts[0]:_ps_port (8000, as
    # the AWS MXNet containers use) and the hosts' control channel on hosts[0]:_ps_port + 1.
    "_ps_port": Spec("int", 8000, low=1024, high=65534),
    # Ours, the 'dataset' channel: the share of a single subset held out for validation (seeded by _seed).
    "validation_fraction": Spec("float", 0.2, low=0, high=1, low_open=True, high_open=True),
}


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _invalid(name: str, raw: Any, accepts: str) -> UserError:
    return UserError(f"The value '{_label(raw)}' is not valid for the '{name}' hyperparameter which accepts {accepts}")


def _range_text(spec: Spec, noun: str) -> str:
    parts = []
    if spec.low is not None:
        parts.append(f"{'greater than' if spec.low_open else 'at least'} {spec.low:g}")
    if spec.high is not None:
        parts.append(f"{'less than' if spec.high_open else 'at most'} {spec.high:g}")
    return f"{noun} " + " and ".join(parts) if parts else noun


def _check_range(name: str, raw: Any, value: float, spec: Spec, noun: str) -> None:
    too_low = spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low)
    too_high = spec.high is not None and (value >= spec.high if spec.high_open else value > spec.high)
    if too_low or too_high:
        raise _invalid(name, raw, _range_text(spec, noun))


def _unwrap(raw: Any) -> Any:
    """Undo the JSON encoding that SageMaker framework estimators apply to every value."""
    if isinstance(raw, str):
        try:
            decoded = json.loads(raw)
        except ValueError:
            return raw.strip()
        if isinstance(decoded, (str, int, float, bool)):
            return decoded.strip() if isinstance(decoded, str) else decoded
    return raw


def _parse_bool(name: str, raw: Any, spec: Spec) -> bool:
    value = _unwrap(raw)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _invalid(name, raw, "one of the following: 'True', 'False'")


def _number(raw: Any) -> float:
    """The value as a finite float, or NaN when it is not a number (booleans are not numbers)."""
    value = _unwrap(raw)
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _parse_int(name: str, raw: Any, spec: Spec) -> int:
    number = _number(raw)
    if math.isnan(number) or number != int(number):
        raise _invalid(name, raw, _range_text(spec, "an integer"))
    _check_range(name, raw, int(number), spec, "an integer")
    return int(number)


def _parse_float(name: str, raw: Any, spec: Spec) -> float:
    number = _number(raw)
    if math.isnan(number):
        raise _invalid(name, raw, _range_text(spec, "a number"))
    _check_range(name, raw, number, spec, "a number")
    return number


def _parse_str(name: str, raw: Any, spec: Spec) -> str:
    value = str(_unwrap(raw)).strip()
    if name == "backbone":
        value = BACKBONE_ALIASES.get(value.lower(), value.lower())
    elif spec.choices:
        value = value.lower()
    if spec.choices and value not in spec.choices:
        accepted = ", ".join(f"'{c}'" for c in spec.choices)
        raise _invalid(name, raw, f"one of the following: {accepted}")
    return value


def _parse_epochs(name: str, raw: Any, spec: Spec) -> tuple[int, ...]:
    value = _unwrap(raw)
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        epochs = tuple(int(str(item).strip()) for item in items if str(item).strip())
    except ValueError:
        epochs = ()
    if not epochs or any(e < 1 for e in epochs):
        raise _invalid(name, raw, "a comma-separated list of positive epoch numbers, for example '10, 20'")
    return tuple(sorted(epochs))


def _parse_class_weights(name: str, raw: Any, spec: Spec) -> str | tuple[float, ...]:
    """``none``, a rule that counts them from the training masks (``auto`` or one of
    ``CLASS_WEIGHT_RULES``) or a list of numbers."""
    value = _unwrap(raw)
    if isinstance(value, str) and value.strip().lower() in ("none", "auto") + CLASS_WEIGHT_RULES:
        return value.strip().lower()
    if isinstance(value, str):  # '[0.5, 2]' as JSON, or '0.5, 2' as hyperparams.json writes it back
        value = [item for item in value.strip().strip("[]").split(",") if item.strip()]
    numbers = [_number(item) for item in value] if isinstance(value, list) else []
    if not numbers or any(math.isnan(n) or n < 0 for n in numbers) or not any(n > 0 for n in numbers):
        raise _invalid(
            name,
            raw,
            "'none', 'auto', "
            + ", ".join(f"'{rule}'" for rule in CLASS_WEIGHT_RULES)
            + " or a JSON list of num_classes non-negative numbers, not all 0, e.g. '[0.5, 2]'",
        )
    return tuple(numbers)


PARSERS: dict[str, Callable[[str, Any, Spec], Any]] = {
    "bool": _parse_bool,
    "int": _parse_int,
    "float": _parse_float,
    "str": _parse_str,
    "epochs": _parse_epochs,
    "class_weights": _parse_class_weights,
}


def defaults_as_strings() -> dict[str, str]:
    """The default configuration as the built-in logs it: every value a string."""
    return {name: to_string(spec.default) for name, spec in TABLE.items() if spec.default is not None}


def to_string(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def round_up_to_multiple_of_8(value: int) -> int:
    return -(-value // 8) * 8


def parse_one(name: str, provided: dict[str, Any]) -> Any:
    """The typed value of ``name`` in ``provided``, or its default; ``UserError`` when invalid or missing."""
    spec = TABLE[name]
    if name in provided and provided[name] is None:
        default = "" if spec.default is None else f" for its default {to_string(spec.default)}"
        raise UserError(
            f"The '{name}' hyperparameter is null; give it a value (SageMaker passes every value as a string) "
            f"or leave it out{default}"
        )
    if name in provided and str(provided[name]).strip() != "":
        return PARSERS[spec.kind](name, provided[name], spec)
    if spec.required:
        raise UserError(f"The '{name}' hyperparameter is required and was not provided")
    return spec.default


# The smallest crop an algorithm trains soundly at. Fast-SCNN's global branch works at stride 32: below
# 64 pixels its features are one pixel wide and its BatchNorm statistics degenerate (running variances
# near 1e16 after four steps at crop 32, and an ONNX export that overflows to NaN).
MIN_CROP_SIZE = {"fastscnn": 64}


def check_crop_size(algorithm: str, crop_size: int) -> None:
    least = MIN_CROP_SIZE.get(algorithm)
    if least and crop_size < least:
        raise UserError(
            f"crop_size is {crop_size} but the algorithm '{algorithm}' needs at least {least}, "
            "so that its stride-32 features are more than one pixel wide"
        )


def check_backbone(algorithm: str, backbone: str) -> None:
    """Refuse a backbone the algorithm is not built on, naming the ones it is."""
    valid = ALGORITHM_BACKBONES[algorithm]
    if valid and backbone not in valid:
        names = ", ".join(f"'{name}'" for name in valid)
        raise UserError(f"The algorithm '{algorithm}' is built on the backbones {names}, not '{backbone}'")
    if not valid:
        log.info("The algorithm '%s' has its own backbone: the backbone hyperparameter does not apply", algorithm)


def parse(provided: dict[str, Any]) -> dict[str, Any]:
    """Validate ``provided`` (raw hyperparameters.json) against the table; return typed values.

    Raises ``UserError`` with the built-in's wording for the first invalid value found.
    """
    unknown = sorted(str(k) for k in provided if k not in TABLE)
    if unknown:
        log.info("Ignoring hyperparameters this algorithm does not use: %s", ", ".join(unknown))
    final = {name: parse_one(name, provided) for name in TABLE}
    final["crop_size"] = round_up_to_multiple_of_8(final["crop_size"])
    if final["augment_scale_min"] >= final["augment_scale_max"]:
        raise UserError(
            f"augment_scale_min ({to_string(final['augment_scale_min'])}) must be below augment_scale_max "
            f"({to_string(final['augment_scale_max'])})"
        )
    check_backbone(final["algorithm"], final["backbone"])
    check_crop_size(final["algorithm"], final["crop_size"])
    if final["lr_scheduler"] == "step" and not final["lr_scheduler_step"]:
        raise UserError(
            "The 'lr_scheduler_step' hyperparameter is required when 'lr_scheduler' is 'step', for example '10, 20'"
        )
    return final
