"""The precision training computes in: float32, or bfloat16 through MXNet's AMP on CPUs built for it.

``precision_dtype`` is ``float32`` (the default), ``bfloat16`` or ``auto`` (bfloat16 where the CPU
has AMX and Linux grants it, float32 otherwise, and always on GPUs, whose kernels MXNet 1.9.1 has
only in float16). ``choose`` decides and says why; the log line names both.

What bfloat16 means here is AMP's: ``amp.init`` wraps MXNet's operator functions so that
convolutions and fully connected layers take bfloat16 inputs (cast on the fly from the float32
parameters) while everything listed as needing float32 (the loss, softmax, resizing, dropout,
sums) is cast back. The parameters, their gradients and the optimizer state stay float32
("master weights"), so checkpoints, ``model_algo-1``, ``model_best.params`` and the ONNX export
are float32 as before.

Two choices beyond a plain ``amp.init``:
- No loss scaling. bfloat16 has float32's exponent range, so gradients neither underflow nor
  overflow where float32's would not; AMP's scaler (made for float16) would multiply
  ``SoftmaxOutput``'s gradient by 65536 and needs its own skipping. The loss functions stay
  unwrapped and the non-finite guard (``guards``) remains the one place that skips an update.
- ``amp.init`` changes MXNet's operator functions for the whole process and has no undo;
  ``enable`` records what it replaced so that ``disable`` puts it back. Training enables it
  before its network first runs (a hybridized graph is traced then, an imperative one runs
  through the wrappers on every call) and disables it before the ONNX export, which traces a
  fresh float32 graph.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

log = logging.getLogger("semseg")

CHOICES = ("float32", "bfloat16", "auto")
AMX_FLAG = "amx_bf16"  # Sapphire Rapids and later Xeons: matrix tiles that multiply bfloat16
ONEDNN_BF16_FLAG = "avx512f"  # below this oneDNN has no bfloat16 kernels at all
ONEDNN_ISA_VARIABLE = "DNNL_MAX_CPU_ISA"  # oneDNN 2.4 (MXNet 1.9.1's) uses AMX only when this allows it
ONEDNN_AMX_ISA = "AVX512_CORE_AMX"
SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 158, 0x1023, 18  # x86_64 Linux


@dataclass(frozen=True)
class Precision:
    dtype: str  # "float32" or "bfloat16"
    reason: str  # why, in words, for the log
    amx: bool = False  # bfloat16 on AMX tiles (allowed by Linux for this process)

    @property
    def low(self) -> bool:
        return self.dtype == "bfloat16"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The feature flags the CPU reports (Linux); empty where /proc/cpuinfo cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def request_amx() -> bool:
    """Ask Linux for the AMX tile state (``arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)``); True when granted.

    A process must ask before its first AMX instruction, or that instruction kills it; the oneDNN
    inside MXNet 1.9.1 does not ask, so this does, once, for the whole process.
    """
    if platform.machine() != "x86_64":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0


def choose(
    requested: str, gpus: int, syncbn_devices: int = 0, flags: set[str] | None = None, amx: bool | None = None
) -> Precision:
    """The precision to train in for ``precision_dtype`` = ``requested`` on this machine, and why.

    ``syncbn_devices``: how many devices SyncBatchNorm synchronizes (0 without it); MXNet documents it
    without low-precision support. ``amx``: whether AMX may be used (default: ask Linux when the CPU
    has it). ``auto`` picks bfloat16 only with AMX: measured here, MXNet's AVX-512 bfloat16 kernels
    (without AMX) took twice float32's time, while AMX took half of it (docs/performance.md).
    Raises ``UserError`` for ``bfloat16`` where it cannot run: on GPUs, with syncbn, on CPUs without AVX-512.
    """
    if requested == "float32":
        return Precision("float32", "precision_dtype is float32")
    flags = cpu_flags() if flags is None else flags
    if amx is None:
        amx = AMX_FLAG in flags and request_amx()
    if requested == "bfloat16":
        if gpus:
            raise UserError(
                "precision_dtype is bfloat16 but this instance trains on GPUs, where MXNet has no bfloat16 kernels; "
                "use float32 or auto"
            )
        if syncbn_devices > 1:
            raise UserError(
                "precision_dtype bfloat16 cannot be combined with syncbn over several devices, as MXNet's "
                "SyncBatchNorm computes in float32 only; set precision_dtype to float32 or syncbn to false"
            )
        if ONEDNN_BF16_FLAG not in flags:
            raise UserError(
                "precision_dtype is bfloat16 but this CPU has no AVX-512, which bfloat16 training needs; "
                "use float32 or auto"
            )
        if amx:
            return Precision("bfloat16", "precision_dtype is bfloat16; this CPU computes it with AMX", amx=True)
        how = "avx512_bf16" if "avx512_bf16" in flags else "emulation in AVX-512"
        return Precision("bfloat16", f"precision_dtype is bfloat16; this CPU computes it with {how}, without AMX")
    if gpus:
        return Precision("float32", "precision_dtype is auto and training runs on GPUs")
    if syncbn_devices > 1:
        return Precision("float32", "precision_dtype is auto and syncbn synchronizes BatchNorm in float32")
    if amx:
        return Precision("bfloat16", "precision_dtype is auto and this CPU computes bfloat16 with AMX", amx=True)
    return Precision("float32", "precision_dtype is auto and this CPU has no usable AMX for bfloat16")


def log_choice(precision: Precision) -> None:
    master = "; parameters, gradients and artifacts stay float32" if precision.low else ""
    log.info("Training precision: %s (%s)%s", precision.dtype, precision.reason, master)


# Concatenations whose inputs can arrive in both precisions (PSPNet's pyramid, DeepLabV3's ASPP: a
# convolution's bfloat16 beside a float32 resize) and which MXNet then rejects; AMP leaves them as they come.
FLOAT32_JOINS = ("Concat", "concat")

_replaced: dict[tuple[object, str], object] = {}  # (module, name) -> the function amp.init replaced


def _operator_modules() -> list:
    """Every module whose attributes ``amp.init`` may replace: the ndarray and symbol namespaces with
    their ``op``, ``_internal`` and prefixed sub-namespaces (``contrib``, ``linalg``, ``random``...)."""
    import mxnet as mx
    from mxnet import base

    modules = []
    for root in (mx.ndarray, mx.symbol):
        modules += [root, root.op, root._internal]
        modules += [getattr(root, prefix[1:-1]) for prefix in base._OP_NAME_PREFIX_LIST if hasattr(root, prefix[1:-1])]
    return modules


def enable(precision: Precision) -> None:
    """Make the operators compute in ``precision`` from now on, until ``disable``; nothing for float32."""
    if not precision.low or _replaced:
        return
    if precision.amx:
        os.environ.setdefault(ONEDNN_ISA_VARIABLE, ONEDNN_AMX_ISA)  # read at oneDNN's first primitive, still to come
    from mxnet.contrib import amp
    from mxnet.contrib.amp.amp import bfloat16  # the lists below know the dtype by this object, not by name

    modules = _operator_modules()
    before = [dict(vars(module)) for module in modules]
    amp.init(target_dtype="bfloat16", fp32_ops=amp.list_fp32_ops(bfloat16) + list(FLOAT32_JOINS))
    loss_outputs = set(amp.list_loss_output_functions(bfloat16))
    for module, old in zip(modules, before, strict=True):
        for name, value in list(vars(module).items()):
            if name in old and old[name] is not value:
                _replaced[(module, name)] = old[name]
                if name in loss_outputs:  # no loss scaling (see the module's docstring)
                    setattr(module, name, old[name])


def disable() -> None:
    """Put back every operator function ``enable`` replaced: graphs traced from now on are float32."""
    if not _replaced:
        return
    from mxnet.contrib.amp import amp as amp_state

    for (module, name), original in _replaced.items():
        setattr(module, name, original)
    _replaced.clear()
    amp_state._amp_initialized = False  # so that a later ``enable`` initializes again
