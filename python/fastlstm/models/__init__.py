"""Keras-shaped models: the functional :class:`Model` (one graph machinery) and
:class:`Sequential`, its linear case; training in :mod:`.training`."""

from ..initializers import set_seed
from .functional import Model
from .sequential import Sequential
from .training import NonFiniteLossError

__all__ = ["Model", "Sequential", "set_seed", "load_model", "NonFiniteLossError"]


def load_model(path, **kwargs):
    """Loads a model file (delegates to :func:`fastlstm.io.load_model`)."""
    from ..io import files as _files

    return _files.load_model(path, **kwargs)
