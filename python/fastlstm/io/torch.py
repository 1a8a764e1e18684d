"""Import from PyTorch: ``torch.nn.LSTM``/``torch.nn.GRU`` modules and state_dicts (duck-typed;
torch is never imported), and export of the parameters under PyTorch's names."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..nn import _to_numpy
from ..rnn import GRU, LSTM
from .params import _float_dtype, _load_params

__all__ = ["from_torch", "from_torch_state_dict", "to_torch_state_dict"]

# =============================================================================== PyTorch
_TORCH_NAME = re.compile(
    r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr|weight_ci|weight_cf|weight_co)"
    r"_l(\d+)(_reverse)?$")


def from_torch_state_dict(state_dict, cell="lstm", *, prefix="", dtype=None, batch_first=False,
                          dropout=0.0, **config):
    """Builds a :class:`~fastlstm.LSTM` (``cell='lstm'``) or :class:`~fastlstm.GRU` from a
    ``torch.nn.LSTM``/``GRU`` state_dict (tensors or arrays; torch is not imported).

    The architecture (input/hidden size, layers, directions, bias, projection, and fastlstm's
    peephole weights ``weight_c{i,f,o}_l{k}``) is read from the names and shapes; ``config``
    keys (input_size, hidden_size, num_layers, bidirectional, proj_size, bias, peephole) are
    checked against it. ``prefix`` selects the keys of one submodule (``"rnn."``); other keys
    are then ignored, while without a prefix any key that is not an LSTM/GRU parameter is an
    error. ``dtype`` defaults to float64 for float64 weights, else float32.
    """
    cell = str(cell).lower()
    if cell not in ("lstm", "gru"):
        raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    sd = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if not _TORCH_NAME.match(name):
            hint = ""
            if "." in name and _TORCH_NAME.match(name.rsplit(".", 1)[1]):
                hint = f" (pass prefix={name.rsplit('.', 1)[0] + '.'!r})"
            raise ValueError(f"state_dict key {key!r} is not an LSTM/GRU parameter{hint}")
        sd[name] = _to_numpy(value)
    if "weight_ih_l0" not in sd:
        raise ValueError(f"state_dict has no {prefix}weight_ih_l0 (keys: {list(state_dict)[:8]})")
    layers = {int(_TORCH_NAME.match(n).group(2)) for n in sd}
    inferred = {}
    inferred["num_layers"] = max(layers) + 1
    inferred["bidirectional"] = any(n.endswith("_reverse") for n in sd)
    inferred["bias"] = "bias_ih_l0" in sd
    w = sd["weight_ih_l0"]
    if w.ndim != 2:
        raise ValueError(f"{prefix}weight_ih_l0 must be 2-D [G, input_size], got shape {w.shape}")
    gates = 4 if cell == "lstm" else 3
    if w.shape[0] % gates or w.shape[0] == 0:
        raise ValueError(f"{prefix}weight_ih_l0 has {w.shape[0]} rows; an {cell.upper()} needs "
                         f"{gates}*hidden_size")
    inferred["hidden_size"] = w.shape[0] // gates
    inferred["input_size"] = w.shape[1]
    if cell == "lstm":
        hr = sd.get("weight_hr_l0")
        inferred["proj_size"] = 0 if hr is None else (hr.shape[0] if hr.ndim == 2 else -1)
        inferred["peephole"] = "weight_ci_l0" in sd
    else:
        extra = [n for n in sd if n.startswith(("weight_hr", "weight_c"))]
        if extra:
            raise ValueError(f"state_dict key {prefix}{extra[0]} has no place in a GRU")
    for key, value in config.items():
        if key not in inferred:
            raise TypeError(f"unexpected argument {key!r}")
        if value != inferred[key]:
            raise ValueError(f"{key}={value!r} was given but the state_dict holds "
                             f"{key}={inferred[key]!r}")
    kwargs = dict(inferred, batch_first=batch_first, dropout=dropout,
                  dtype=_float_dtype(dtype, w))
    cls = LSTM if cell == "lstm" else GRU
    try:
        module = cls(**kwargs, seed=0)
    except (ValueError, TypeError) as e:
        raise ValueError(f"state_dict describes an invalid {cls.__name__} {inferred}: "
                         f"{e}") from None
    _load_params(module, sd, f"{prefix}")
    return module




def from_torch(obj, *, cell=None, prefix="", dtype=None, batch_first=None):
    """A fastlstm module from a ``torch.nn.LSTM``/``torch.nn.GRU`` module (duck-typed, torch is
    not imported) or from a state_dict (then ``cell`` says 'lstm' or 'gru', default 'lstm')."""
    if isinstance(obj, Mapping):
        return from_torch_state_dict(obj, cell or "lstm", prefix=prefix, dtype=dtype,
                                     batch_first=bool(batch_first))
    kind = type(obj).__name__
    if kind not in ("LSTM", "GRU") or not hasattr(obj, "state_dict"):
        raise TypeError(f"expected a torch.nn.LSTM, torch.nn.GRU or a state_dict, got {kind}")
    if cell is not None and cell.lower() != kind.lower():
        raise ValueError(f"cell={cell!r} was given for a {kind}")
    config = dict(input_size=obj.input_size, hidden_size=obj.hidden_size,
                  num_layers=obj.num_layers, bidirectional=bool(obj.bidirectional),
                  bias=bool(obj.bias))
    if kind == "LSTM":
        config["proj_size"] = int(getattr(obj, "proj_size", 0))
    return from_torch_state_dict(
        obj.state_dict(), kind.lower(), dtype=dtype, dropout=float(obj.dropout),
        batch_first=bool(obj.batch_first if batch_first is None else batch_first), **config)


def to_torch_state_dict(module):
    """The parameters of a fastlstm LSTM/GRU as NumPy arrays (copies) under PyTorch's names,
    ready for ``torch_module.load_state_dict({k: torch.from_numpy(v) ...})``. Peephole
    weights (no PyTorch counterpart) come as ``weight_c{i,f,o}_l{k}[_reverse]``."""
    if not isinstance(module, (LSTM, GRU)):
        raise TypeError(f"module must be a fastlstm.LSTM or fastlstm.GRU, got "
                        f"{type(module).__name__}")
    return module.state_dict()

