"""Data: the embedded `shapes` set, CIFAR archives and downloads, Fashion-MNIST IDX, the pipeline."""
import gzip
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest
from scipy.optimize import minimize

from minirattn.data import (BatchStream, DataError, augment, load_cifar, load_dataset, load_fashion_mnist,
                            make_shapes, normalize, pixel_mean, write_cifar_archive)
from minirattn.data.fashion_mnist import read_idx
from minirattn.functional import softmax_cross_entropy


# ---- shapes -------------------------------------------------------------------------------------
def test_shapes_is_deterministic_balanced_and_well_formed():
    a, b, c = make_shapes(60, 20, seed=3), make_shapes(60, 20, seed=3), make_shapes(60, 20, seed=4)
    assert a.x_train.shape == (60, 3, 32, 32) and a.x_train.dtype == np.uint8
    assert a.x_test.shape == (20, 3, 32, 32) and a.num_classes == 10
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    assert (np.bincount(a.y_train, minlength=10) == 6).all()
    assert a.x_train.std() > 30                                         # not blank images


def test_shapes_needs_spatial_features_logistic_regression_scores_at_most_40_percent():
    """A multinomial logistic regression on standardised raw pixels (L-BFGS, L2) does not
    learn shapes: measured ~18-22% test accuracy (chance is 10%); we assert <= 40%."""
    d = make_shapes(3000, 1000, seed=1)
    X = d.x_train.reshape(len(d.x_train), -1).astype(np.float64)
    mu, sd = X.mean(0), X.std(0) + 1e-6
    X, Xt = (X - mu) / sd, (d.x_test.reshape(len(d.x_test), -1) - mu) / sd
    K, D, lam = 10, X.shape[1], 1e-2

    def f(w):
        W, b = w[:-K].reshape(K, D), w[-K:]
        loss, dz = softmax_cross_entropy(X @ W.T + b, d.y_train)
        return float(loss) + 0.5 * lam * (W * W).sum() / len(X), np.concatenate([(dz.T @ X + lam * W / len(X)).ravel(), dz.sum(0)])
    w = minimize(f, np.zeros(K * D + K), jac=True, method="L-BFGS-B", options=dict(maxiter=200)).x
    acc = ((Xt @ w[:-K].reshape(K, D).T + w[-K:]).argmax(1) == d.y_test).mean()
    assert acc <= 0.40, acc


def test_shapes_bad_sizes():
    with pytest.raises(ValueError, match="n_train: expected an int >= 1, got 0"):
        make_shapes(0, 10)


# ---- CIFAR --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,k", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_the_official_format_from_a_tarball(tmp_path, name, k):
    src = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}[name]
    md5 = write_cifar_archive(str(tmp_path / src), name, n_train_per_batch=4, n_test=3)
    d = load_cifar(name, str(tmp_path), md5=md5)
    n_batches = 5 if name == "cifar10" else 1
    assert d.x_train.shape == (4 * n_batches, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)
    assert d.num_classes == k and d.y_train.max() < k and d.x_train.dtype == np.uint8


def test_cifar_reads_an_extracted_folder(tmp_path):
    import tarfile
    arc = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_archive(str(arc), "cifar10", n_train_per_batch=2, n_test=2)
    with tarfile.open(arc) as t:
        t.extractall(tmp_path, filter="data")
    arc.unlink()
    d = load_cifar("cifar10", str(tmp_path))
    assert d.x_train.shape == (10, 3, 32, 32) and d.classes[0] == "class0"
    os.remove(tmp_path / "cifar-10-batches-py" / "test_batch")
    with pytest.raises(DataError, match="lacks test_batch"):
        load_cifar("cifar10", str(tmp_path))


def test_cifar_missing_and_corrupt_archives_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="cifar10 not found in .*download=True"):
        load_cifar("cifar10", str(tmp_path))
    arc = tmp_path / "cifar-10-python.tar.gz"
    md5 = write_cifar_archive(str(arc), "cifar10")
    arc.write_bytes(arc.read_bytes()[:100])                           # truncated
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_cifar("cifar10", str(tmp_path), md5=md5)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


class _Server:
    """A local HTTP server with Range support that can cut the first response short."""

    def __init__(self, payload: bytes, cut_first_at=None):
        self.payload, self.cut, self.requests = payload, cut_first_at, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = outer.payload[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut is not None and len(outer.requests) == 1:
                    self.wfile.write(body[:outer.cut])
                    self.wfile.flush()
                    self.connection.shutdown(2)                       # the connection drops midway
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def archive(tmp_path):
    src = tmp_path / "served.tar.gz"
    md5 = write_cifar_archive(str(src), "cifar10", n_train_per_batch=50, n_test=20)
    return src.read_bytes(), md5


def test_download_checks_md5_and_renames(tmp_path, archive):
    payload, md5 = archive
    srv = _Server(payload)
    try:
        d = load_cifar("cifar10", str(tmp_path / "data"), download=True, url=srv.url, md5=md5)
    finally:
        srv.close()
    assert d.x_train.shape == (250, 3, 32, 32)
    assert (tmp_path / "data" / "cifar-10-python.tar.gz").exists()
    assert not (tmp_path / "data" / "cifar-10-python.tar.gz.part").exists()


def test_download_with_wrong_md5_leaves_nothing_behind(tmp_path, archive):
    payload, _ = archive
    srv = _Server(payload)
    try:
        with pytest.raises(DataError, match="MD5 is .* expected 0+: the file was corrupt"):
            load_cifar("cifar10", str(tmp_path / "data"), download=True, url=srv.url, md5="0" * 32)
    finally:
        srv.close()
    assert os.listdir(tmp_path / "data") == []


def test_interrupted_download_resumes_with_a_range_request(tmp_path, archive):
    payload, md5 = archive
    srv = _Server(payload, cut_first_at=len(payload) // 3)
    try:
        with pytest.raises(DataError, match="partial file .* is kept"):
            load_cifar("cifar10", str(tmp_path), download=True, url=srv.url, md5=md5)
        part = tmp_path / "cifar-10-python.tar.gz.part"
        assert 0 < part.stat().st_size < len(payload)
        d = load_cifar("cifar10", str(tmp_path), download=True, url=srv.url, md5=md5)
    finally:
        srv.close()
    assert srv.requests[0] is None and srv.requests[1] == f"bytes={len(payload) // 3}-"
    assert hashlib.md5((tmp_path / "cifar-10-python.tar.gz").read_bytes()).hexdigest() == md5
    assert d.x_test.shape == (20, 3, 32, 32)


# ---- Fashion-MNIST IDX ---------------------------------------------------------------------------
def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_reader_on_generated_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", imgs)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    d = load_fashion_mnist(str(tmp_path))
    assert d.x_train.shape == (7, 1, 32, 32) and d.num_classes == 10
    np.testing.assert_array_equal(d.x_train[:, 0, 2:30, 2:30], imgs)    # zero-padded 28 -> 32
    assert d.x_train[:, :, :2].max() == 0
    np.testing.assert_array_equal(d.y_test, labels)
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match="truncated"):
        read_idx(str(tmp_path / "bad.gz"))


def test_fashion_mnist_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="Fashion-MNIST not found in .*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path))


# ---- pipeline -----------------------------------------------------------------------------------
def test_normalize_and_mean():
    x = np.random.default_rng(0).integers(0, 256, (10, 3, 4, 4)).astype(np.uint8)
    mean = pixel_mean(x)
    assert mean.shape == (3, 4, 4) and mean.dtype == np.float32
    np.testing.assert_allclose(normalize(x, mean).mean(axis=0), 0, atol=1e-6)


def test_augment_crops_from_the_zero_padded_image_and_flips():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(augment(x, rng, pad=0, flip=False), x)
    out = augment(x, np.random.default_rng(1), pad=4, flip=True)
    assert out.shape == x.shape
    n_exact = n_flip = 0
    for a, b in zip(x, out):                 # every output is a shifted (maybe flipped) window
        n_exact += np.array_equal(a, b)
        n_flip += np.array_equal(a[:, :, ::-1], b)
    assert 0 < n_exact + n_flip < 200
    assert (out == 0).any()                  # padding shows up at the borders of shifted crops


def test_batch_stream_is_a_pure_function_of_seed_and_iteration():
    x = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8)).astype(np.uint8)
    y = np.arange(20)
    mean = pixel_mean(x)
    s1, s2 = BatchStream(x, y, mean, 6, seed=1), BatchStream(x, y, mean, 6, seed=1)
    for it in (4, 0, 7, 4):                  # any order, same answer
        a, b = s1.batch(it), s2.batch(it)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    epoch = np.concatenate([s1.batch(i)[1] for i in range(3)])   # 3 batches of 6 per epoch
    assert len(set(epoch)) == 18             # no repeats within an epoch
    assert not np.array_equal(BatchStream(x, y, mean, 6, seed=2).batch(0)[1], s1.batch(0)[1])
    shard = s1.batch(4, 2, 5)                # a data-parallel rank's slice of the same batch
    np.testing.assert_array_equal(shard[0], s2.batch(4)[0][2:5])
    np.testing.assert_array_equal(shard[1], s2.batch(4)[1][2:5])
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1, got 0"):
        BatchStream(x, y, mean, 0)
