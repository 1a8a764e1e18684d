"""Keras-shaped layers on NumPy arrays; the recurrent ones run in fastlstm's C++ engine.

By concern: :mod:`.base` (the Layer class, ``Input`` and the symbolic tensors that graphs are
built from), :mod:`.core` (Embedding, Dense, Dropout, Masking, RepeatVector, ...),
:mod:`.recurrent` (LSTM, GRU, Bidirectional), :mod:`.merging` (Concatenate, Add, ...),
:mod:`.attention` (Attention, AdditiveAttention).
"""

from .attention import AdditiveAttention, Attention
from .base import _REGISTRY, Input, InputLayer, KerasTensor, Layer, layer_from_config
from .core import (
    Activation,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Masking,
    RepeatVector,
    Reshape,
    SpatialDropout1D,
    TimeDistributed,
    _TimeDistributed,
)
from .merging import Add, Average, Concatenate, Multiply
from .bidirectional import Bidirectional
from .recurrent import GRU, LSTM

__all__ = [
    "Layer", "Input", "InputLayer", "KerasTensor", "Embedding", "LSTM", "GRU", "Bidirectional",
    "Dense", "Dropout", "SpatialDropout1D", "Activation", "Masking", "RepeatVector", "Flatten",
    "Reshape", "TimeDistributed", "Concatenate", "Add", "Multiply", "Average", "Attention",
    "AdditiveAttention",
    "layer_from_config",
]

_CLASSES = {
    "Embedding": Embedding,
    "LSTM": LSTM,
    "GRU": GRU,
    "Bidirectional": Bidirectional,
    "Dense": Dense,
    "Dropout": Dropout,
    "SpatialDropout1D": SpatialDropout1D,
    "Activation": Activation,
    "Masking": Masking,
    "RepeatVector": RepeatVector,
    "Flatten": Flatten,
    "Reshape": Reshape,
    "TimeDistributed": _TimeDistributed,
    "Concatenate": Concatenate,
    "Add": Add,
    "Multiply": Multiply,
    "Average": Average,
    "Attention": Attention,
    "AdditiveAttention": AdditiveAttention,
}

_REGISTRY.update(_CLASSES)
