"""The implementations a case runs: fastlstm and the peers that are installed (PyTorch, ONNX
Runtime exporting the same torch module, the NumPy reference), each as a :class:`Runner` whose
``call()`` is one timed unit (bench/README.md says what that is for each kind). Peers that are
not installed are reported as missing, never an error."""

from __future__ import annotations

import os
import warnings

import numpy as np

from .. import reference
from .. import set_num_threads as _set_num_threads
from ..rnn import LSTM

__all__ = ["Runner", "default_threads", "set_fastlstm_threads", "import_torch", "import_ort",
           "make_models", "fastlstm_runner", "torch_runner", "ort_runner", "reference_runner"]


def default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_fastlstm_threads(n):
    """Sets fastlstm's thread count (``fastlstm.set_num_threads``); returns True."""
    _set_num_threads(int(n))
    return True

class Runner:
    """One implementation on one case.

    ``call()`` is the timed unit of work; ``units`` is how many reported units one call holds
    (steps, for step_py); ``before()`` runs untimed before each sample (thread settings);
    ``check()`` returns arrays compared against fastlstm's once, untimed."""

    def __init__(self, call, units=1, before=None, check=None):
        self.call, self.units, self.before, self.check = call, units, before, check


def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def import_ort():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def make_models(case, torch, seed=0):
    """fastlstm module and (when torch is installed) a torch module with the same weights."""
    tmod = None
    if torch is not None:
        torch.manual_seed(seed)
        if case.kind == "step":
            tmod = torch.nn.LSTMCell(case.I, case.H)
            lstm = LSTM(case.I, case.H, 1)
            lstm.load_state_dict({f"{k}_l0": v for k, v in tmod.state_dict().items()})
        else:
            tmod = torch.nn.LSTM(case.I, case.H, case.layers)
            lstm = LSTM.from_torch(tmod)
    else:
        lstm = LSTM(case.I, case.H, case.layers, seed=seed)
    return lstm, tmod


def fastlstm_runner(case, lstm, data):
    x = data.get("x")
    if case.kind == "inference":
        return Runner(lambda: lstm(x), check=lambda: [lstm(x)[0]])
    if case.kind == "training":
        d_out = np.ones((case.T, case.B, case.H), dtype=np.float32)

        def call():
            lstm.forward(x, train=True)
            lstm.backward(d_out)

        def check():
            out, _ = lstm.forward(x, train=True)
            d_x, _ = lstm.backward(d_out)
            return [out, d_x, lstm.grads["weight_hh_l0"].copy()]

        return Runner(call, check=check)
    # step: the stream reads the module's parameters; the state is carried across steps
    stream = lstm.stream(batch=1)
    xs = data["x_steps"]  # [steps, 1, I]

    def run_steps():
        stream.reset()
        step = stream.step
        y = None
        for t in range(xs.shape[0]):
            y = step(xs[t])
        return y

    return Runner(run_steps, units=xs.shape[0], check=lambda: [run_steps()])


def torch_runner(case, torch, tmod, data, threads):
    torch.set_num_threads(threads)
    if case.kind == "inference":
        x = torch.from_numpy(data["x"])

        def call():
            with torch.no_grad():
                return tmod(x)

        return Runner(call, check=lambda: [call()[0].numpy()])
    if case.kind == "training":
        x = torch.from_numpy(data["x"].copy()).requires_grad_(True)

        def call():
            tmod.zero_grad(set_to_none=True)
            x.grad = None
            out, _ = tmod(x)
            out.sum().backward()
            return out

        def check():
            out = call()
            return [out.detach().numpy(), x.grad.numpy(), tmod.weight_hh_l0.grad.numpy().copy()]

        return Runner(call, check=check)
    xs = torch.from_numpy(data["x_steps"])

    def run_steps():
        with torch.no_grad():
            h, c = tmod(xs[0])
            for t in range(1, xs.shape[0]):
                h, c = tmod(xs[t], (h, c))
        return h

    return Runner(run_steps, units=xs.shape[0], check=lambda: [run_steps().numpy()])


def ort_runner(case, torch, ort, tmod, data, threads, tmpdir):
    """Exports the torch module (TorchScript exporter, ``dynamo=False``) and runs it in ORT."""
    import contextlib
    import io

    path = os.path.join(tmpdir, f"{case.name}.onnx")
    x = data["x"]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(tmod, (torch.from_numpy(x),), path, dynamo=False,
                          input_names=["x"], output_names=["y", "h_n", "c_n"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {"x": x}
    return Runner(lambda: sess.run(["y"], feed), check=lambda: [sess.run(["y"], feed)[0]])


def reference_runner(case, lstm, data):
    params = {k: np.array(v) for k, v in lstm.params.items()}
    x = data["x"]
    if case.kind == "inference":
        fwd = lambda: reference.lstm_forward(params, x, num_layers=case.layers)  # noqa: E731
        return Runner(fwd, check=lambda: [fwd()[0]])
    d_out = np.ones((case.T, case.B, case.H))

    def call():
        out, _, _, cache = reference.lstm_forward(params, x, num_layers=case.layers)
        return out, reference.lstm_backward(cache, d_out)

    def check():
        out, (d_x, _, _, grads) = call()
        return [out, d_x, grads["weight_hh_l0"]]

    return Runner(call, check=check)

