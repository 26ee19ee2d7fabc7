"""The dist kvstore of a multi-host job: the operations the training loop runs through it.

Gradients are summed through the kvstore (``sum_gradients``; the servers run no optimizer), and
every worker runs the same optimizer on the same sums: the weights stay identical, the
learning-rate schedule is set locally, and every worker can checkpoint its optimizer state. (A
``gluon.Trainer`` given the dist kvstore would run the optimizer on the servers, where its state
cannot be saved; with ``update_on_kvstore=False`` its per-parameter start-up broadcast races with
the first gradient sums in MXNet 1.9.1 and aborts the servers.)

The processes behind the kvstore (scheduler, servers) and the control channel that watches them
are ``distributed``'s; this module runs inside the training loop, once mxnet is imported.
"""

from __future__ import annotations

import mxnet as mx

STOP_KEY = 1_000_000  # kvstore keys 0..n-1 are the network's parameters


def _parameters(net) -> list:
    return list(net.collect_params().values())  # the same order on every host: kvstore key = position


def create(net, ctx: list):
    """The dist kvstore, every worker's weights set to the first host's.

    Keys are parameter positions. Weights travel through numpy copies: after MKLDNN's inference
    pass a weight may be held in MKLDNN's own layout, which ps-lite cannot send or receive.
    """
    kv = mx.kv.create("dist_device_sync" if ctx[0].device_type == "gpu" else "dist_sync")
    params = _parameters(net)
    keys = list(range(len(params)))
    kv.init(keys, [mx.nd.array(p.data(ctx[0]).asnumpy(), dtype=p.dtype) for p in params])
    first_host = [mx.nd.zeros(p.shape, dtype=p.dtype) for p in params]
    kv.pull(keys, out=first_host)
    mx.nd.waitall()
    for param, value in zip(params, first_host):
        param.set_data(value)
    kv.init(STOP_KEY, mx.nd.zeros((1,)))
    mx.nd.waitall()
    kv._barrier()
    return kv


def sum_gradients(kv, net) -> None:
    """Replace every gradient by its sum over the devices and hosts (then ``Trainer.step`` updates locally)."""
    for i, param in enumerate(_parameters(net)):
        if param.grad_req != "null":
            kv.pushpull(i, param.list_grad(), out=param.list_grad(), priority=-i)


def average_running_statistics(net, kv=None, size: int = 1) -> None:
    """Average BatchNorm's running mean and variance over every device (and host with ``kv``).

    They are not gradients, so nothing averages them during training; doing it at the end of each
    epoch makes evaluation, checkpoints and the saved model the same on every device and host.
    """
    for i, param in enumerate(_parameters(net)):
        if param.grad_req != "null":
            continue
        copies = param.list_data()
        mean = mx.nd.add_n(*[c.as_in_context(copies[0].context) for c in copies]) / len(copies)
        if kv is not None:
            total = mx.nd.zeros(mean.shape, dtype=mean.dtype)
            kv.pushpull(i, mx.nd.array(mean.asnumpy(), dtype=mean.dtype), out=total)
            mean = total / size
        param.set_data(mean)


def any_worker(kv):
    """``agree(raised) -> bool``: True on every worker when any worker raised its flag (one round trip)."""

    def agree(raised: bool) -> bool:
        flag = mx.nd.array([1.0 if raised else 0.0])
        kv.pushpull(STOP_KEY, flag, out=flag)
        return float(flag.asscalar()) > 0

    return agree
