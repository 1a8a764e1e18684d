"""Model files, import and export, one module per concern:

- :mod:`~fastlstm.io.safetensors`: the container (:func:`save_safetensors`,
  :func:`load_safetensors`), read and written with NumPy alone;
- :mod:`~fastlstm.io.files`: fastlstm model files: :func:`save`/:func:`load` for a bare
  :class:`~fastlstm.LSTM`/:class:`~fastlstm.GRU`, :func:`save_model`/:func:`load_model` for
  the Keras-shaped models, :func:`read_model_info` (the format: docs/model-format.md);
- :mod:`~fastlstm.io.torch`: :func:`from_torch`, :func:`from_torch_state_dict`,
  :func:`to_torch_state_dict`;
- :mod:`~fastlstm.io.keras`: :func:`from_keras`;
- :mod:`~fastlstm.io.onnx`: :func:`from_onnx`, :func:`to_onnx`;
- :mod:`~fastlstm.io.atomic` (the one atomic writer) and :mod:`~fastlstm.io.params` (gate
  orders, all-or-nothing loading) serve the others.

Writes are atomic (temporary file in the target's directory, fsync, ``os.replace``) and reads
are strict: a file that is truncated, has a malformed header, overlapping or out-of-range
tensors, or a format version this code does not know raises ValueError naming the file and the
problem. Every import checks the shape of every tensor and refuses, naming the tensor, anything
it cannot map; nothing is ever loaded partially.
"""

from .files import (FORMAT_VERSION, SELFCHECK_INPUT, SELFCHECK_LENGTHS, SELFCHECK_OUTPUT, load,
                    load_model, read_model_info, register_model_class, save, save_model)
from .keras import from_keras
from .onnx import from_onnx, to_onnx
from .safetensors import load_safetensors, save_safetensors
from .torch import from_torch, from_torch_state_dict, to_torch_state_dict
from .. import rnn as _rnn

# the modules' save()/to_onnx() conveniences call these (rnn sits below io and cannot import it)
_rnn._WRITERS.update(save=save, to_onnx=to_onnx)

__all__ = [
    "FORMAT_VERSION",
    "save_safetensors",
    "load_safetensors",
    "save",
    "load",
    "save_model",
    "load_model",
    "read_model_info",
    "register_model_class",
    "SELFCHECK_INPUT",
    "SELFCHECK_OUTPUT",
    "SELFCHECK_LENGTHS",
    "from_torch",
    "from_torch_state_dict",
    "to_torch_state_dict",
    "from_keras",
    "from_onnx",
    "to_onnx",
]
