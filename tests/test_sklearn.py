"""fastlstm.sklearn: scikit-learn's own estimator checks, hyperparameter search, labels,
input layouts and reproducibility. scikit-learn is the optional extra 'sklearn'."""

import pickle
import random

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")  # the optional extra fastlstm[sklearn]

from fastlstm.sklearn import LSTMClassifier, LSTMRegressor
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator


def _memory_task(n=240, T=8, seed=0):
    """3-D sequences; the class is the sign pattern of the first step's feature 0."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, 2))
    y = np.where(X[:, 0, 0] > 0.5, "high", np.where(X[:, 0, 0] < -0.5, "low", "mid"))
    return X, y


@pytest.mark.parametrize("est", [
    LSTMClassifier(units=16, epochs=40, learning_rate=0.01, random_state=0),
    LSTMRegressor(units=16, epochs=40, learning_rate=0.01, random_state=0),
], ids=["classifier", "regressor"])
def test_scikit_learn_estimator_checks(est):
    results = check_estimator(est, on_fail=None, on_skip=None)
    failed = [(r["check_name"], repr(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert failed == []
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    # only checks that need packages absent here (pandas, array API) may be skipped
    assert skipped <= {"check_array_api_input", "check_classifier_data_not_an_array",
                       "check_regressor_data_not_an_array", "check_dataframe_column_names_consistency",
                       "check_n_features_in_after_fitting"}
    assert len(results) > 40


def test_classifier_fit_predict_proba_score_with_string_labels():
    X, y = _memory_task()
    clf = LSTMClassifier(units=16, epochs=25, learning_rate=0.02, random_state=1)
    clf.fit(X[:180], y[:180])
    assert list(clf.classes_) == ["high", "low", "mid"]
    proba = clf.predict_proba(X[180:])
    assert proba.shape == (60, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    pred = clf.predict(X[180:])
    np.testing.assert_array_equal(pred, clf.classes_[proba.argmax(1)])
    assert clf.score(X[180:], y[180:]) >= 0.8
    assert len(clf.history_["loss"]) == 25


def test_binary_classifier_and_2d_input_with_timesteps():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 12))  # 6 steps x 2 features
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    clf = LSTMClassifier(units=8, timesteps=6, epochs=30, learning_rate=0.02, random_state=0,
                         bidirectional=True, cell="gru")
    clf.fit(X, y)
    assert clf.model_.layers[0].input_shape == (None, 2)
    assert clf.predict_proba(X).shape == (200, 2)
    assert clf.score(X, y) >= 0.85
    with pytest.raises(ValueError, match="timesteps=5 must divide the 12 features"):
        LSTMClassifier(timesteps=5).fit(X, y)


def test_regressor_learns_a_sequence_sum_and_multi_output():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 6, 1))
    y = X[:, :, 0].sum(axis=1) * 10 + 100  # standardized for training, mapped back
    reg = LSTMRegressor(units=16, epochs=40, learning_rate=0.01, random_state=0)
    reg.fit(X[:240], y[:240])
    assert reg.score(X[240:], y[240:]) > 0.9
    assert abs(reg.predict(X[240:]).mean() - y[240:].mean()) < 5
    Y = np.stack([y, -y], axis=1)
    reg2 = LSTMRegressor(units=8, epochs=5, random_state=0, num_layers=2, dropout=0.1).fit(X, Y)
    assert reg2.predict(X[:3]).shape == (3, 2)


def test_random_state_reproducible_without_touching_global_generators():
    X, y = _memory_task(80)
    random.seed(5)
    np.random.seed(5)
    before = (random.random(), np.random.random())
    random.seed(5)
    np.random.seed(5)
    a = LSTMClassifier(units=8, epochs=3, dropout=0.2, random_state=7).fit(X, y)
    b = LSTMClassifier(units=8, epochs=3, dropout=0.2, random_state=7).fit(X, y)
    assert (random.random(), np.random.random()) == before
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = LSTMClassifier(units=8, epochs=3, dropout=0.2, random_state=8).fit(X, y)
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


def test_grid_search_over_lstm_classifier():
    X, y = _memory_task(150, seed=4)
    search = GridSearchCV(
        LSTMClassifier(epochs=8, random_state=0),
        {"units": [4, 16], "learning_rate": [0.001, 0.02]},
        cv=3,
    )
    search.fit(X, y)
    assert set(search.best_params_) == {"units", "learning_rate"}
    assert len(search.cv_results_["mean_test_score"]) == 4
    # a larger rate learns much more in 8 epochs than 0.001: the search must see that
    assert search.best_params_["learning_rate"] == 0.02
    assert search.best_estimator_.predict(X[:5]).shape == (5,)


def test_randomized_search_cross_val_score_pipeline_clone_pickle():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(120, 10))
    y = (X[:, :3].sum(axis=1) > 0).astype(int)
    scores = cross_val_score(LSTMClassifier(units=8, epochs=10, learning_rate=0.02,
                                            random_state=0), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6
    rs = RandomizedSearchCV(LSTMClassifier(epochs=3, random_state=0),
                            {"units": [4, 8, 12], "num_layers": [1, 2]}, n_iter=3, cv=2,
                            random_state=0)
    rs.fit(X, y)
    assert len(rs.cv_results_["params"]) == 3
    pipe = make_pipeline(StandardScaler(), LSTMRegressor(units=4, epochs=3, random_state=0))
    pipe.fit(X, X[:, 0])
    assert pipe.predict(X).shape == (120,)
    est = LSTMClassifier(units=5, epochs=2, random_state=0).fit(X, y)
    assert clone(est).get_params()["units"] == 5
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))


def test_bad_hyperparameters_and_inputs():
    X, y = _memory_task(20)
    with pytest.raises(ValueError, match="cell must be 'lstm' or 'gru'"):
        LSTMClassifier(cell="rnn").fit(X, y)
    with pytest.raises(ValueError, match="units must be a positive int"):
        LSTMClassifier(units=0).fit(X, y)
    with pytest.raises(ValueError, match="unknown optimizer 'adamz'"):
        LSTMClassifier(optimizer="adamz").fit(X, y)
    with pytest.raises(ValueError, match="only one class"):
        LSTMClassifier().fit(X, np.zeros(20))
    clf = LSTMClassifier(units=4, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="3 features per step, but this estimator was fitted with 2"):
        clf.predict(np.zeros((3, 8, 3)))
