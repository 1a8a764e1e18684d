"""Dask: GridSearchCV through joblib's Dask backend on a LocalCluster of 2 worker processes
(loopback) gives the default backend's scores; fastlstm.dask.predict equals model.predict."""

import pickle

import numpy as np
import pytest

import fastlstm
from fastlstm.layers import LSTM, Dense, Input

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")
from sklearn.model_selection import GridSearchCV  # noqa: E402

import fastlstm.dask as fdask  # noqa: E402
from fastlstm.sklearn import LSTMClassifier  # noqa: E402


@pytest.fixture(scope="module")
def client():
    # processes=True: real worker processes, as on a cluster (each imports fastlstm itself)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 8, 3)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    return X, y


def test_grid_search_on_dask_equals_default_backend(client):
    X, y = _data()
    est = LSTMClassifier(units=6, epochs=3, batch_size=16, random_state=0)
    grid = {"units": [4, 8], "learning_rate": [0.01, 0.03]}
    local = GridSearchCV(est, grid, cv=2).fit(X, y)
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(est, grid, cv=2).fit(X, y)
    # the fits ran on the workers, whose engine follows their OMP_NUM_THREADS=1
    assert set(client.run(fastlstm.get_num_threads).values()) == {1}
    for key in ("split0_test_score", "split1_test_score", "mean_test_score", "rank_test_score"):
        np.testing.assert_array_equal(remote.cv_results_[key], local.cv_results_[key])
    assert len(set(local.cv_results_["mean_test_score"])) > 1  # the grid points differ
    np.testing.assert_array_equal(remote.predict(X), local.predict(X))


def test_fitted_estimator_pickles_cheaply():
    X, y = _data(40)
    est = LSTMClassifier(units=16, epochs=1, batch_size=16, random_state=0).fit(X, y)
    blob = pickle.dumps(est)
    weights = est.model_.flat_params.nbytes
    # the configuration, the weights and the optimizer's two moment buffers; no engine state
    assert len(blob) < 4 * weights + 16384
    np.testing.assert_array_equal(pickle.loads(blob).predict_proba(X), est.predict_proba(X))


@pytest.mark.parametrize("seq", [False, True])
def test_predict_equals_model_predict(client, tmp_path, seq):
    fastlstm.set_seed(1)
    model = fastlstm.Sequential([Input((None, 5)), LSTM(7, return_sequences=seq), Dense(3)])
    x = np.random.default_rng(2).standard_normal((101, 9, 5)).astype(np.float32)
    ref = model.predict(x, batch_size=16, verbose=0)
    dx = da.from_array(x, chunks=(30, 4, 5))  # time split too: predict rechunks to whole rows
    got = fdask.predict(model, dx, batch_size=16)
    assert isinstance(got, da.Array) and got.shape == ref.shape
    assert got.chunks[0] == (30, 30, 30, 11)
    np.testing.assert_array_equal(got.compute(), ref)
    path = tmp_path / f"m{int(seq)}.fastlstm"
    model.save(path)
    before = client.run(_file_loads)
    np.testing.assert_array_equal(fdask.predict(str(path), dx, batch_size=16).compute(), ref)
    # 4 blocks on 2 workers: each worker read the file at most once
    loads = {w: n - before[w] for w, n in client.run(_file_loads).items()}
    assert 1 <= sum(loads.values()) <= 2 and max(loads.values()) == 1


def _file_loads():
    import fastlstm.dask

    return fastlstm.dask._FILE_LOADS[0]


def test_predict_arguments():
    fastlstm.set_seed(1)
    model = fastlstm.Sequential([Input((None, 5)), LSTM(4), Dense(1)])
    x = np.zeros((4, 3, 5), np.float32)
    with pytest.raises(TypeError, match="x must be a dask.array.Array"):
        fdask.predict(model, x)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        fdask.predict(model, da.from_array(x), batch_size=0)
    with pytest.raises(TypeError, match="model_or_path must be a fastlstm model"):
        fdask.predict(object(), da.from_array(x))
