"""``precision_dtype`` and ``_hybrid``: which precision is chosen and why, AMP switched on and off
cleanly, and the same training losses whether the network is hybridized or imperative.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from semseg import hyperparameters
from semseg.errors import UserError
from semseg.model.factory import build_from_hyperparameters
from semseg.train import loop, precision
from semseg.train.optim import lr_schedule, optimizer_settings
from semseg.train.parts import Training, make_criterion
from semseg.train.stop import StopFlag

AMX = {"avx512f", "avx512_bf16", "amx_bf16"}
BF16 = {"avx512f", "avx512_bf16"}
AVX512_ONLY = {"avx512f"}
OLD_CPU = {"avx2"}

# Hybridized and imperative float32 run the same kernels: their losses agree to float32 rounding.
FP32_TOLERANCE = 1e-5
# bfloat16 keeps 8 bits of mantissa. From the same weights the first loss moves by up to ~1.5% (its
# rounding through some 50 convolutions; hybridized and imperative graphs place a few casts
# differently); after updates computed from bfloat16 gradients, later losses by up to ~6% (measured).
BF16_FIRST_TOLERANCE = 0.02
BF16_LATER_TOLERANCE = 0.10


@pytest.mark.parametrize(
    ("requested", "gpus", "syncbn", "flags", "amx", "dtype", "because"),
    [
        ("float32", 0, 0, AMX, True, "float32", "precision_dtype is float32"),
        ("bfloat16", 0, 0, AMX, True, "bfloat16", "computes it with AMX"),
        ("bfloat16", 0, 0, AMX, False, "bfloat16", "with avx512_bf16, without AMX"),  # Linux refused the tiles
        ("bfloat16", 0, 0, AVX512_ONLY, False, "bfloat16", "emulation in AVX-512"),
        ("auto", 0, 0, AMX, True, "bfloat16", "auto and this CPU computes bfloat16 with AMX"),
        ("auto", 0, 0, BF16, False, "float32", "no usable AMX"),
        ("auto", 2, 0, AMX, True, "float32", "runs on GPUs"),
        ("auto", 0, 2, AMX, True, "float32", "syncbn"),
    ],
)
def test_the_choice_and_its_reason(requested, gpus, syncbn, flags, amx, dtype, because):
    chosen = precision.choose(requested, gpus, syncbn, flags, amx)
    assert chosen.dtype == dtype
    assert because in chosen.reason
    assert chosen.amx == (dtype == "bfloat16" and amx)


@pytest.mark.parametrize(
    ("gpus", "syncbn", "flags", "says"),
    [(1, 0, AMX, "GPUs"), (0, 2, AMX, "syncbn"), (0, 0, OLD_CPU, "AVX-512")],
)
def test_bfloat16_where_it_cannot_run_is_one_clear_sentence(gpus, syncbn, flags, says):
    with pytest.raises(UserError, match=says) as raised:
        precision.choose("bfloat16", gpus, syncbn, flags, amx=False)
    assert str(raised.value).count(". ") == 0 and "float32" in str(raised.value)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\nbugs\t\t: none\n")
    assert precision.cpu_flags(cpuinfo) == {"fpu", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == set()


def test_the_hyperparameter_accepts_the_three_choices_and_no_other():
    base = {"num_classes": "4", "num_training_samples": "8"}
    for value in precision.CHOICES:
        assert hyperparameters.parse({**base, "precision_dtype": value})["precision_dtype"] == value
    with pytest.raises(UserError, match="precision_dtype"):
        hyperparameters.parse({**base, "precision_dtype": "float16"})


def _casts(net) -> int:
    """How many precision casts the hybridized ``net``'s traced graph holds (``tojson`` hides them)."""
    return sum(
        "amp_cast" in name or "amp_multicast" in name for name in net._cached_graph[1].get_internals().list_outputs()
    )


def _small_net():
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(4, 3), gluon.nn.BatchNorm(), gluon.nn.Activation("relu"))
    net.initialize()
    net.hybridize()
    return net


def test_enable_casts_convolutions_and_disable_undoes_it():
    original = mx.nd.Convolution
    x = mx.nd.ones((1, 3, 8, 8))
    precision.enable(precision.Precision("bfloat16", "test"))
    try:
        low = _small_net()
        low(x)
        assert _casts(low) > 0
        assert mx.nd.Convolution is not original
    finally:
        precision.disable()
    assert mx.nd.Convolution is original and mx.sym.Convolution.__name__ == "Convolution"
    plain = _small_net()
    plain(x)
    assert _casts(plain) == 0
    assert all(p.data().dtype == np.float32 for p in low.collect_params().values())  # master weights


def _first_losses(hybrid: bool, dtype: str, weights: str, steps: int = 4) -> list[float]:
    """The training losses of the first ``steps`` iterations of the real ``train_step``, from ``weights``."""
    hp = hyperparameters.parse(
        {
            "num_classes": "4",
            "num_training_samples": "8",
            "crop_size": "32",
            "base_size": "48",
            "mini_batch_size": "2",
            "use_pretrained_model": "False",
            "learning_rate": "0.01",
            "_hybrid": str(hybrid),
            "precision_dtype": dtype,
        }
    )
    chosen = precision.choose(dtype, 0)  # with AMX where this machine has it
    precision.enable(chosen)
    try:
        ctx = [mx.cpu()]
        net = build_from_hyperparameters(hp)
        net.load_parameters(weights, ctx=ctx)
        if hybrid:
            net.hybridize(static_alloc=True, static_shape=True)
        name, settings = optimizer_settings(hp)
        trainer = gluon.Trainer(net.collect_params(), name, settings)
        training = Training(hp, net, make_criterion(hp)[0], trainer, ctx, lr_schedule(hp, steps), StopFlag(), "h")
        rng = np.random.RandomState(0)
        losses = []
        for step in range(steps):
            images = mx.nd.array(rng.uniform(-2, 2, (2, 3, 32, 32)))
            labels = mx.nd.array(np.tile(np.arange(4).repeat(8), (2, 32, 1)))  # four vertical bands
            mx.random.seed(step)  # the same dropout masks in both runs
            loss, updated = loop.train_step(training, images, labels)
            assert updated
            losses.append(loss)
        if hybrid and chosen.low:
            assert _casts(net) > 0
        return losses
    finally:
        precision.disable()


@pytest.fixture(scope="module")
def initial_weights(tmp_path_factory):
    hp = hyperparameters.parse(
        {"num_classes": "4", "num_training_samples": "8", "crop_size": "32", "use_pretrained_model": "False"}
    )
    mx.random.seed(0)
    net = build_from_hyperparameters(hp)
    net.initialize(mx.init.Xavier(magnitude=2))
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path_factory.mktemp("weights") / "initial.params")
    net.save_parameters(path)
    return path


@pytest.fixture(scope="module")
def float32_imperative(initial_weights):
    return _first_losses(False, "float32", initial_weights)


def test_hybridized_and_imperative_training_give_the_same_losses(initial_weights, float32_imperative):
    imperative = float32_imperative
    hybridized = _first_losses(True, "float32", initial_weights)
    np.testing.assert_allclose(hybridized, imperative, rtol=FP32_TOLERANCE)
    assert imperative[-1] < 0.8 * imperative[0]  # it learns: the same numbers are not a stuck network's


def test_bfloat16_training_gives_the_same_losses_within_its_precision(initial_weights, float32_imperative):
    reference = float32_imperative
    imperative = _first_losses(False, "bfloat16", initial_weights)
    hybridized = _first_losses(True, "bfloat16", initial_weights)
    for losses in (imperative, hybridized):
        np.testing.assert_allclose(losses[0], reference[0], rtol=BF16_FIRST_TOLERANCE)
        np.testing.assert_allclose(losses[1:], reference[1:], rtol=BF16_LATER_TOLERANCE)
        assert losses[-1] < 0.8 * losses[0]  # it learns as float32 does
    np.testing.assert_allclose(hybridized[0], imperative[0], rtol=BF16_FIRST_TOLERANCE)
    assert hybridized != reference  # it did compute in bfloat16


@pytest.mark.slow
def test_a_bfloat16_job_says_so_and_writes_float32_artifacts(tmp_path):
    """A real ``train`` run with precision_dtype bfloat16, hybridized: the log names the precision and
    why, oneDNN ran bfloat16 kernels (on AMX where the log says so), and what it wrote is float32."""
    import onnx
    from harness.trainjob import WITH_EXPORT, make_tree, run_train

    root = make_tree(tmp_path, precision_dtype="bfloat16", _hybrid="true", **WITH_EXPORT)
    job = run_train(root, env={"DNNL_VERBOSE": "1"})
    assert job.returncode == 0, job.log[-3000:]
    (line,) = job.lines(r"Training precision: .*")
    assert line.startswith("Training precision: bfloat16 (precision_dtype is bfloat16; this CPU computes it with")
    assert "Network: hybridized graph (_hybrid true)" in job.log
    kernels = [row for row in job.lines(r"dnnl_verbose,exec,cpu,convolution,[^\n]*") if "forward_training" in row]
    assert any("bf16" in row for row in kernels)
    assert any("amx" in row for row in kernels) == ("with AMX" in line)
    saved = mx.nd.load(str(job.model_dir / "model_algo-1"))
    assert {array.dtype for array in saved.values()} == {np.float32}
    model = onnx.load(str(job.model_dir / "model.onnx"))
    types = {tensor.data_type for tensor in model.graph.initializer}
    assert onnx.TensorProto.FLOAT in types and not types & {onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT16}
    casts = [node for node in model.graph.node if node.op_type == "Cast"]
    assert all(attribute.i != onnx.TensorProto.BFLOAT16 for node in casts for attribute in node.attribute)
