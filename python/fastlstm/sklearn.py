"""scikit-learn estimators on fastlstm: :class:`LSTMClassifier` and :class:`LSTMRegressor`.

Hyperparameters are constructor arguments, so ``GridSearchCV``, ``RandomizedSearchCV``,
``cross_val_score`` and ``Pipeline`` work as with any estimator (scikit-learn is the optional
extra ``fastlstm[sklearn]``).

Inputs: ``X`` [n_samples, timesteps, features], or 2-D [n_samples, timesteps * features] read
as ``timesteps`` steps of ``n_features / timesteps`` features (``timesteps=None``: one feature
per step). The network: ``num_layers`` recurrent layers (``cell='lstm'`` or ``'gru'``, optionally
bidirectional, ``Dropout(dropout)`` after each), then a Dense head (sigmoid for two classes,
softmax for more, linear for regression), trained with Adam (or ``optimizer``) on
cross-entropy / MSE. ``random_state`` fixes initialization, shuffling and dropout without
touching the global random generators.
"""

from __future__ import annotations

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fastlstm.sklearn needs scikit-learn: pip install 'fastlstm[sklearn]'"
    ) from e

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _validate_data = None

from . import initializers, optim
from .callbacks import EarlyStopping
from .layers import GRU, LSTM, Bidirectional, Dense, Dropout, Input
from .models import Sequential

__all__ = ["LSTMClassifier", "LSTMRegressor"]


class _LSTMEstimator(BaseEstimator):
    def __init__(self, units=32, num_layers=1, cell="lstm", bidirectional=False, dropout=0.0,
                 timesteps=None, epochs=20, batch_size=32, learning_rate=1e-3, optimizer="adam",
                 validation_split=0.0, early_stopping=False, patience=5, random_state=None,
                 verbose=0):
        self.units = units
        self.num_layers = num_layers
        self.cell = cell
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.timesteps = timesteps
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.validation_split = validation_split
        self.early_stopping = early_stopping
        self.patience = patience
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    # ------------------------------------------------------------------------------ data
    def _check_X(self, X, y=None, reset=True, fitting=False):
        kw = dict(allow_nd=True, dtype=[np.float64, np.float32], ensure_min_samples=1)
        if _validate_data is not None:
            if not fitting:
                X = _validate_data(self, X, reset=reset, **kw)
            else:  # y=None here raises scikit-learn's "requires y" error
                X, y = _validate_data(self, X, y, reset=reset, multi_output=True, **kw)
        else:  # pragma: no cover
            if y is None and fitting:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the "
                                 "target y is None")
            X, y = (self._validate_data(X, reset=reset, **kw), None) if not fitting else \
                self._validate_data(X, y, reset=reset, multi_output=True, **kw)
        if X.ndim == 3:
            X3 = X
        elif X.ndim == 2:
            T = X.shape[1] if self.timesteps is None else int(self.timesteps)
            if T < 1 or X.shape[1] % T:
                raise ValueError(f"timesteps={self.timesteps} must divide the {X.shape[1]} "
                                 "features of a 2-D X (read as timesteps x features)")
            X3 = X.reshape(X.shape[0], T, X.shape[1] // T)
        else:
            raise ValueError(f"X must be 2-D [n_samples, timesteps*features] or 3-D "
                             f"[n_samples, timesteps, features], got shape {X.shape}")
        if reset:
            self._n_step_features = X3.shape[2]
        elif X3.shape[2] != self._n_step_features:
            raise ValueError(f"X has {X3.shape[2]} features per step, but this estimator was "
                             f"fitted with {self._n_step_features}")
        return X3, y

    def _check_params(self):
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {self.cell!r}")
        for name in ("units", "num_layers", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (0 if name == "epochs" else 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def _network(self, n_features, n_out, head):
        layers = [Input((None, n_features))]
        Cell = LSTM if self.cell == "lstm" else GRU
        for i in range(self.num_layers):
            layer = Cell(int(self.units), return_sequences=i < self.num_layers - 1)
            layers.append(Bidirectional(layer) if self.bidirectional else layer)
            if self.dropout:
                layers.append(Dropout(float(self.dropout)))
        layers.append(Dense(n_out, activation=head))
        return Sequential(layers)

    def _optimizer(self):
        if isinstance(self.optimizer, str):
            cls = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD,
                   "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}.get(self.optimizer.lower())
            if cls is None:
                raise ValueError(f"unknown optimizer {self.optimizer!r}; expected 'adam', "
                                 "'adamw', 'sgd', 'rmsprop' or 'adagrad'")
            return cls(learning_rate=float(self.learning_rate))
        raise TypeError("optimizer must be a name ('adam', 'sgd', ...); the learning rate is "
                        "the learning_rate parameter")

    def _train(self, X3, y_fit, n_out, head, loss):
        self._check_params()
        seed = None
        if self.random_state is not None:
            seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        with initializers.seed_scope(seed):
            model = self._network(X3.shape[2], n_out, head)
            model.compile(self._optimizer(), loss)
            callbacks = []
            if self.early_stopping:
                callbacks.append(EarlyStopping(
                    monitor="val_loss" if self.validation_split else "loss",
                    patience=int(self.patience), restore_best_weights=True))
            history = model.fit(X3, y_fit, epochs=int(self.epochs), batch_size=int(self.batch_size),
                                verbose=self.verbose, validation_split=float(self.validation_split),
                                callbacks=callbacks)
        self.model_ = model
        self.history_ = history.history
        return self

    def _outputs(self, X):
        """The head's pre-activation in float64: the recurrent layers run in the engine
        (whose results do not depend on the batch's other rows); the final Dense is computed
        in float64 so that float32 matrix-product paths (which differ between one row and
        many) cannot make a sample's prediction depend on what it is batched with."""
        check_is_fitted(self, "model_")
        X3, _ = self._check_X(X, reset=False)
        m = self.model_
        bs = max(int(self.batch_size), 256)
        feats = []
        for start in range(0, len(X3), bs):
            h = X3[start : start + bs].astype(m.dtype)
            for layer in m.layers[:-1]:
                h = layer.forward(h, training=False)
            feats.append(h)
        head = m.layers[-1]
        z = np.concatenate(feats).astype(np.float64) @ head.params["kernel"].astype(np.float64)
        return z + head.params["bias"].astype(np.float64)


class LSTMClassifier(ClassifierMixin, _LSTMEstimator):
    """A recurrent sequence classifier: ``fit(X, y)``, ``predict``, ``predict_proba``,
    ``score`` (accuracy). Any hashable labels; ``classes_`` keeps their order."""

    def fit(self, X, y):
        X3, y = self._check_X(X, y, reset=True, fitting=True)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            import warnings

            from sklearn.exceptions import DataConversionWarning

            warnings.warn("A column-vector y was passed when a 1d array was expected",
                          DataConversionWarning, stacklevel=2)
            y = y[:, 0]
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("Classifier can't train when only one class is present.")
        if len(self.classes_) == 2:
            return self._train(X3, y_enc.astype(np.float32), 1, "sigmoid", "binary_crossentropy")
        return self._train(X3, y_enc, len(self.classes_), "softmax",
                           "sparse_categorical_crossentropy")

    def predict_proba(self, X):
        z = self._outputs(X)
        if len(self.classes_) == 2:
            e = np.exp(-np.abs(z))
            p = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
            return np.hstack([1.0 - p, p])
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        proba = self.predict_proba(X)  # checks fitted-ness first
        return self.classes_[np.argmax(proba, axis=1)]


class LSTMRegressor(RegressorMixin, _LSTMEstimator):
    """A recurrent sequence regressor (one or several outputs): ``fit``, ``predict``,
    ``score`` (R²). Targets are standardized for training (``normalize_y``) and mapped back."""

    def __init__(self, units=32, num_layers=1, cell="lstm", bidirectional=False, dropout=0.0,
                 timesteps=None, epochs=20, batch_size=32, learning_rate=1e-3, optimizer="adam",
                 validation_split=0.0, early_stopping=False, patience=5, random_state=None,
                 verbose=0, normalize_y=True):
        super().__init__(units=units, num_layers=num_layers, cell=cell,
                         bidirectional=bidirectional, dropout=dropout, timesteps=timesteps,
                         epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                         optimizer=optimizer, validation_split=validation_split,
                         early_stopping=early_stopping, patience=patience,
                         random_state=random_state, verbose=verbose)
        self.normalize_y = normalize_y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        X3, y = self._check_X(X, y, reset=True, fitting=True)
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        y2 = y.reshape(len(y), -1)
        if self.normalize_y:
            self._y_mean = y2.mean(axis=0)
            std = y2.std(axis=0)
            self._y_std = np.where(std > 0, std, 1.0)
        else:
            self._y_mean, self._y_std = np.zeros(y2.shape[1]), np.ones(y2.shape[1])
        y_fit = ((y2 - self._y_mean) / self._y_std).astype(np.float32)
        return self._train(X3, y_fit, y2.shape[1], "linear", "mse")

    def predict(self, X):
        p = self._outputs(X) * self._y_std + self._y_mean
        return p[:, 0] if self._y_1d else p
