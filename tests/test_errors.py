"""Bad input and damaged files, across the public API and every command.

Each row of CASES is one mistake a user can make. A command row runs ``minirattn ...`` in-process
and asserts a non-zero exit status, no traceback, and a message naming the offending value or
path; an API row asserts the exception type and the message. Adding a case is one line: a name,
what to run (built from the ``files`` fixture's damaged files), and the words the message must hold.
"""
import gzip
import os
import pickle
import re

import numpy as np
import pytest

import minirattn
from minirattn import functional as F, gradcheck, nn
from minirattn.cli import main
from minirattn.data import DataError, load_dataset
from minirattn.data.fashion_mnist import FILES as FMNIST_FILES
from minirattn.models import build
from minirattn.training import CheckpointError, TrainConfig, evaluate_checkpoint, load_trained
from helpers import TINY_RUN as TINY

HAS_GPU = True
try:
    minirattn.backend.get("cupy")
except minirattn.backend.BackendError:
    HAS_GPU = False


# ---- damaged files ----------------------------------------------------------------------------
def _cifar_folder(root, change=None):
    """An extracted CIFAR-10 folder in the official layout; ``change(member, batch)`` may damage
    a batch (return the object to pickle instead)."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    members = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for m in members:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, 4)]}
        batch = change(m, batch) if change else batch
        with open(os.path.join(folder, m), "wb") as f:
            pickle.dump(batch, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [str(i).encode() for i in range(10)]}, f)
    return root


def _idx(array, magic=None):
    array = np.asarray(array, dtype=np.uint8)
    head = magic if magic is not None else bytes([0, 0, 8, array.ndim])
    return head + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()


def _fmnist_folder(root, change=None):
    """The four Fashion-MNIST IDX files (tiny); ``change(name, raw bytes)`` may damage one."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 10, 6),
             rng.integers(0, 256, (4, 28, 28)), rng.integers(0, 10, 4)]
    for name, a in zip(FMNIST_FILES, parts):
        raw = _idx(a)
        raw = change(name, raw) if change else raw
        with gzip.open(os.path.join(root, name), "wb") as f:
            f.write(raw)
    return root


def _only(member, damage):
    """A ``change`` that damages one member only."""
    return lambda name, obj: damage(obj) if name == member else obj


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint and metrics.json of a two-iteration run."""
    folder = tmp_path_factory.mktemp("run")
    r = minirattn.train_cifar(iterations=2, eval_every=2, checkpoint_dir=str(folder), **TINY)
    return r.checkpoint_path, r.metrics_path


class Files:
    """Damaged files made on demand in the test's own folder."""

    def __init__(self, root, trained):
        self.root, (self.ckpt, self.metrics) = str(root), trained

    def path(self, name):
        return os.path.join(self.root, name)

    def write(self, name, data):
        with open(self.path(name), "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        return self.path(name)

    def ckpt_with(self, edit):
        raw = bytearray(open(self.ckpt, "rb").read())
        return self.write("damaged.rattn", bytes(edit(raw)))

    def folder(self, name):
        os.makedirs(self.path(name), exist_ok=True)
        return self.path(name)

    def cifar(self, change=None):
        return _cifar_folder(self.folder("cifar"), change)

    def fmnist(self, change=None):
        return _fmnist_folder(self.path("fmnist"), change)


def _flip(raw, at):
    raw[at] ^= 0x40
    return raw


TRAIN = ["train", "--procs", "1", "--iterations", "2", "--eval-every", "2", "--n-train", "16", "--n-test", "8",
         "--batch-size", "8", "--no-progress"]

# (name, argv built from Files, words the message must hold)
COMMANDS = [
    ("batch size 0", lambda f: TRAIN + ["--batch-size", "0"], "batch_size: expected an int >= 1, got 0"),
    ("negative lr", lambda f: TRAIN + ["--lr", "-1"], "lr: expected a number in (0, inf], got -1.0"),
    ("nan lr", lambda f: TRAIN + ["--lr", "nan"], "lr: expected a number"),
    ("nan weight decay", lambda f: TRAIN + ["--weight-decay", "nan"], "weight_decay: expected a number"),
    ("label noise 1.5", lambda f: TRAIN + ["--label-noise", "1.5"], "label_noise: expected a number in [0, 1)"),
    ("zero iterations", lambda f: TRAIN + ["--iterations", "0"], "iterations: expected an int >= 1, got 0"),
    ("zero training images", lambda f: TRAIN + ["--n-train", "0"], "n_train: expected an int >= 1, got 0"),
    ("zero test images", lambda f: TRAIN + ["--n-test", "0"], "n_test: expected an int >= 1, got 0"),
    ("eval every 0", lambda f: TRAIN + ["--eval-every", "0"], "eval_every: expected an int >= 1, got 0"),
    ("negative seed", lambda f: TRAIN + ["--seed", "-2"], "seed: expected an int >= 0, got -2"),
    ("batch larger than the data", lambda f: TRAIN + ["--batch-size", "64"], "batch_size 64 is larger"),
    ("checkpoint dir is a file", lambda f: TRAIN + ["--checkpoint-dir", f.write("afile", "x")],
     "is a file, not a folder"),
    ("checkpoint dir under a file", lambda f: TRAIN + ["--checkpoint-dir", f.write("afile", "x") + "/run"],
     "cannot write in checkpoint_dir"),
    ("resume with nothing", lambda f: TRAIN + ["--resume", "--checkpoint-dir", f.folder("empty")],
     "nothing to resume in"),
    ("cifar missing", lambda f: TRAIN + ["--dataset", "cifar10", "--data-dir", f.folder("nothing")],
     "cifar10 not found in"),
    ("cifar archive not gzip", lambda f: TRAIN + ["--dataset", "cifar10", "--data-dir", os.path.dirname(
        f.write("cifar-10-python.tar.gz", b"not an archive"))], "corrupt or truncated"),
    ("cifar batch not a pickle", lambda f: TRAIN + ["--dataset", "cifar10", "--data-dir", f.cifar(
        _only("data_batch_2", lambda b: "text instead of a dict"))], "data_batch_2: expected a dict"),
    ("cifar data of floats", lambda f: TRAIN + ["--dataset", "cifar10", "--data-dir", f.cifar(
        _only("test_batch", lambda b: {**b, b"data": b[b"data"].astype(np.float32)}))],
     "test_batch: expected b'data' as a uint8 array"),
    ("cifar rows of the wrong size", lambda f: TRAIN + ["--dataset", "cifar10", "--data-dir", f.cifar(
        _only("data_batch_1", lambda b: {**b, b"data": b[b"data"][:, :1000]}))], "shape (4, 1000)"),
    ("cifar more labels than images", lambda f: TRAIN + ["--dataset", "cifar10", "--data-dir", f.cifar(
        _only("data_batch_3", lambda b: {**b, b"labels": b[b"labels"] + [1]}))], "4 images but 5 labels"),
    ("cifar label -1", lambda f: TRAIN + ["--dataset", "cifar10", "--data-dir", f.cifar(
        _only("data_batch_4", lambda b: {**b, b"labels": [-1] + b[b"labels"][1:]}))],
     "labels must lie in [0, 10), got range [-1"),
    ("cifar label 10", lambda f: TRAIN + ["--dataset", "cifar10", "--data-dir", f.cifar(
        _only("test_batch", lambda b: {**b, b"labels": [10] + b[b"labels"][1:]}))],
     "labels must lie in [0, 10)"),
    ("cifar labels not numbers", lambda f: TRAIN + ["--dataset", "cifar10", "--data-dir", f.cifar(
        _only("data_batch_5", lambda b: {**b, b"labels": ["a"] * 4}))], "labels as a list of integers"),
    ("fashion-mnist missing", lambda f: TRAIN + ["--dataset", "fashion-mnist", "--data-dir", f.folder("no")],
     "Fashion-MNIST not found in"),
    ("idx wrong magic", lambda f: TRAIN + ["--dataset", "fashion-mnist", "--data-dir", f.fmnist(
        _only(FMNIST_FILES[0], lambda raw: b"\x00\x00\x0d\x03" + raw[4:]))], "expected an unsigned-byte IDX"),
    ("idx cut in the header", lambda f: TRAIN + ["--dataset", "fashion-mnist", "--data-dir", f.fmnist(
        _only(FMNIST_FILES[2], lambda raw: raw[:9]))], "inside the header"),
    ("idx extra bytes", lambda f: TRAIN + ["--dataset", "fashion-mnist", "--data-dir", f.fmnist(
        _only(FMNIST_FILES[1], lambda raw: raw + b"\x01\x02"))], "longer than its header says"),
    ("idx truncated", lambda f: TRAIN + ["--dataset", "fashion-mnist", "--data-dir", f.fmnist(
        _only(FMNIST_FILES[0], lambda raw: raw[:-100]))], "the file is truncated"),
    ("idx label 12", lambda f: TRAIN + ["--dataset", "fashion-mnist", "--data-dir", f.fmnist(
        _only(FMNIST_FILES[3], lambda raw: raw[:-1] + b"\x0c"))], "got a label 12"),
    ("idx labels of two dimensions", lambda f: TRAIN + ["--dataset", "fashion-mnist", "--data-dir", f.fmnist(
        _only(FMNIST_FILES[1], lambda raw: _idx(np.zeros((6, 1)))))], "expected 1 dimensions (labels)"),
    ("idx not gzip", lambda f: TRAIN + ["--dataset", "fashion-mnist", "--data-dir", (f.fmnist(), f.write(
        "fmnist/" + FMNIST_FILES[0], b"plain bytes"))[0]], "not a readable (gzip) IDX file"),
    ("evaluate missing checkpoint", lambda f: ["evaluate", "--checkpoint", f.path("none.rattn")], "does not exist"),
    ("evaluate empty checkpoint", lambda f: ["evaluate", "--checkpoint", f.write("e.rattn", b"")], "bad header"),
    ("evaluate truncated checkpoint", lambda f: ["evaluate", "--checkpoint", f.ckpt_with(lambda r: r[:len(r) // 2])],
     "is corrupt"),
    ("evaluate bit-flipped checkpoint", lambda f: ["evaluate", "--checkpoint", f.ckpt_with(lambda r: _flip(r, 500))],
     "is corrupt"),
    ("evaluate wrong-format file", lambda f: ["evaluate", "--checkpoint", f.write("w.rattn", b"PK\x03\x04" * 40)],
     "not a minirattn checkpoint"),
    ("evaluate a folder", lambda f: ["evaluate", "--checkpoint", f.folder("adir")], "is a folder"),
    ("masks missing checkpoint", lambda f: ["masks", "--checkpoint", f.path("none.rattn")], "does not exist"),
    ("masks bit-flipped checkpoint", lambda f: ["masks", "--checkpoint", f.ckpt_with(lambda r: _flip(r, 100))],
     "is corrupt"),
    ("masks zero images", lambda f: ["masks", "--checkpoint", f.ckpt, "--n", "0", "--out", f.path("m.png")],
     "--n: expected how many test images to draw (an int >= 1), got 0"),
    ("masks into a missing folder", lambda f: ["masks", "--checkpoint", f.ckpt, "--n", "2",
                                               "--out", f.path("no/such/m.png")], "no/such/m.png"),
    ("plot missing metrics", lambda f: ["plot", "--metrics", f.path("none.json")], "does not exist"),
    ("plot empty metrics", lambda f: ["plot", "--metrics", f.write("m.json", "")], "cannot be read"),
    ("plot damaged metrics", lambda f: ["plot", "--metrics", f.write("m.json", '{"config": {}, "hist')],
     "cannot be read"),
    ("plot metrics without history", lambda f: ["plot", "--metrics", f.write("m.json", '{"config": {}}')],
     "cannot be read"),
    ("plot empty history", lambda f: ["plot", "--metrics", f.write("m.json", '{"history": []}')],
     "holds no history rows"),
    ("plot rows without loss", lambda f: ["plot", "--metrics", f.write("m.json", '{"history": [{"a": 1}]}')],
     "holds no history rows"),
    ("plot into a missing folder", lambda f: ["plot", "--metrics", f.metrics, "--out", f.path("no/c.png")],
     "no/c.png"),
    ("check with a negative seed", lambda f: ["check", "--seed", "-1"], "seed: expected an int >= 0, got -1"),
]
if not HAS_GPU:
    COMMANDS += [
        ("train on cupy without a GPU", lambda f: TRAIN + ["--backend", "cupy"], "cupy"),
        ("evaluate on cupy without a GPU", lambda f: ["evaluate", "--checkpoint", f.ckpt, "--backend", "cupy"],
         "cupy"),
    ]


@pytest.mark.parametrize("name,argv,words", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_fails_with_one_clear_line(name, argv, words, tmp_path, trained, capsys):
    files = Files(tmp_path, trained)
    status = main(argv(files))
    out = capsys.readouterr()
    assert status == 2, (status, out.err)
    assert "Traceback" not in out.err + out.out
    assert out.err.startswith("minirattn: ") and out.err.count("\n") == 1, out.err
    assert words in out.err, out.err


def _x(*shape, dtype=np.float64):
    return np.ones(shape, dtype=dtype)


def _tiny_net_after_forward():
    net = build("attention56", num_classes=3, input_size=16, widths=(8, 8, 16), stem_width=4,
                final_width=16, final_units=1, dtype="float64")
    net(_x(2, 3, 16, 16))
    return net


# (name, a call that must fail, the exception type, words the message must hold)
API = [
    ("conv 3-D input", lambda f: F.conv2d_forward(_x(3, 5, 5), _x(4, 3, 3, 3)), ValueError, "4-D"),
    ("conv float16", lambda f: F.conv2d_forward(_x(1, 3, 5, 5, dtype=np.float16), _x(4, 3, 3, 3, dtype=np.float16)),
     TypeError, "float32/float64), got dtype float16"),
    ("conv int weight", lambda f: F.conv2d_forward(_x(1, 3, 5, 5), np.ones((4, 3, 3, 3), int)), TypeError, "int64"),
    ("conv channel mismatch", lambda f: F.conv2d_forward(_x(1, 3, 5, 5), _x(4, 2, 3, 3)), ValueError, "3 channels"),
    ("conv stride 0", lambda f: F.conv2d_forward(_x(1, 3, 5, 5), _x(4, 3, 3, 3), None, 0), ValueError, "stride"),
    ("conv unknown method", lambda f: F.conv2d_forward(_x(1, 3, 5, 5), _x(4, 3, 3, 3), method="fft"), ValueError,
     "unknown conv2d method 'fft'"),
    ("conv list input", lambda f: F.conv2d_forward([[1.0]], _x(4, 3, 3, 3)), TypeError, "got list"),
    ("batch norm channels", lambda f: F.batchnorm2d_forward(_x(2, 4, 3, 3), _x(3), _x(3)), ValueError,
     "gamma has 3 entries but the input has 4 channels"),
    ("max pool 2-D", lambda f: F.maxpool2d_forward(_x(4, 4)), ValueError, "4-D"),
    ("bilinear size 0", lambda f: F.bilinear_forward(_x(1, 1, 4, 4), 0), ValueError, "size"),
    ("labels out of range", lambda f: F.softmax_cross_entropy(_x(2, 3), np.array([0, 3])), ValueError,
     "labels: expected values in [0, 3)"),
    ("logits NaN", lambda f: F.softmax_cross_entropy(_x(2, 3) * np.nan, np.array([0, 1])), ValueError,
     "expected finite values"),
    ("unknown mask activation", lambda f: F.mask_activation_forward(_x(1, 2, 2, 2), "soft"), ValueError,
     "unknown mask_activation 'soft'"),
    ("unknown learning rule", lambda f: F.attention_residual_forward(_x(1, 2, 2, 2), _x(1, 2, 2, 2), "xyz"),
     ValueError, "unknown learning 'xyz'"),
    ("conv layer zero channels", lambda f: nn.Conv2d(0, 4, 3), ValueError, "in_ch: expected an int >= 1, got 0"),
    ("linear layer float features", lambda f: nn.Linear(2.5, 3), TypeError, "in_features: expected an int"),
    ("unknown network", lambda f: build("resnet50"), ValueError, "unknown network 'resnet50'"),
    ("width not a multiple of 4", lambda f: build("attention56", widths=(6, 8, 16)), ValueError,
     "multiple of 4, got 6"),
    ("unknown spec field", lambda f: build("attention56", depth=3), ValueError, "unknown spec fields ['depth']"),
    ("config lr 0", lambda f: TrainConfig(lr=0), ValueError, "lr: expected a number in (0, inf], got 0.0"),
    ("config lr text", lambda f: TrainConfig(lr="0.1"), TypeError, "lr: expected a number, got str"),
    ("config momentum nan", lambda f: TrainConfig(momentum=float("nan")), ValueError, "momentum"),
    ("config keep -1", lambda f: TrainConfig(keep_checkpoints=-1), ValueError, "keep_checkpoints"),
    ("config batch size text", lambda f: TrainConfig(batch_size="8"), TypeError, "batch_size: expected an int"),
    ("config resume maybe", lambda f: TrainConfig(resume="maybe"), ValueError, "unknown resume 'maybe'"),
    ("config unknown backend", lambda f: TrainConfig(backend="tpu"), ValueError, "unknown backend 'tpu'"),
    ("config model kwargs list", lambda f: TrainConfig(model_kwargs=[1]), TypeError, "model_kwargs"),
    ("config unknown dataset", lambda f: TrainConfig(dataset="imagenet"), ValueError, "unknown dataset 'imagenet'"),
    ("gradcheck eps 0", lambda f: gradcheck(F.relu_forward, [_x(2)], F.relu_backward, eps=0), ValueError,
     "eps and tol must be > 0"),
    ("gradcheck negative tol", lambda f: gradcheck(F.relu_forward, [_x(2)], F.relu_backward, tol=-1), ValueError,
     "gradcheck tol"),
    ("gradcheck float32", lambda f: gradcheck(F.relu_forward, [_x(2, dtype=np.float32)], F.relu_backward),
     TypeError, "must be a float64 array"),
    ("load_dataset n_test 0", lambda f: load_dataset("shapes", n_test=0), ValueError, "n_test: expected an int >= 1"),
    ("load_trained damaged", lambda f: load_trained(f.ckpt_with(lambda r: _flip(r, 300))), CheckpointError,
     "damaged.rattn is corrupt"),
    ("evaluate_checkpoint missing", lambda f: evaluate_checkpoint(f.path("x.rattn")), CheckpointError,
     "x.rattn does not exist"),
    ("state dict of another shape", lambda f: nn.Linear(2, 3).load_state_dict(
        {"weight": np.zeros((3, 3)), "bias": np.zeros(3)}), ValueError, "weight has shape (3, 3), expected (3, 2)"),
    ("gradcheck with no float input", lambda f: gradcheck(lambda y: (y, None), [np.array([1, 2])],
                                                          lambda d, c: (d,)), ValueError,
     "nothing to check: no floating-point input (got ['int64'])"),
    ("network backward of another shape", lambda f: _tiny_net_after_forward().backward(_x(2, 5)),
     ValueError, "expected the gradient of the logits, shape (2, 3)"),
    ("resume another network's run", lambda f: minirattn.train_cifar(
        iterations=2, eval_every=2, checkpoint_dir=os.path.dirname(f.ckpt), resume=True,
        **{**TINY, "arch": "attention92"}), ValueError,
     "it is another run (arch 'attention56' there, 'attention92' now)"),
    ("cifar folder damaged (API)", lambda f: load_dataset("cifar10", f.cifar(
        _only("data_batch_1", lambda b: [1, 2]))), DataError, "data_batch_1: expected a dict"),
]


@pytest.mark.parametrize("name,call,exc,words", API, ids=[c[0] for c in API])
def test_every_api_mistake_raises_a_clear_error(name, call, exc, words, tmp_path, trained):
    with pytest.raises(exc) as info:
        call(Files(tmp_path, trained))
    assert words in str(info.value), str(info.value)


def test_there_are_at_least_sixty_cases():
    assert len(COMMANDS) + len(API) >= 60


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(CheckpointError):
        main(["evaluate", "--checkpoint", str(tmp_path / "none.rattn"), "--debug"])
    with pytest.raises(CheckpointError):
        main(["--debug", "evaluate", "--checkpoint", str(tmp_path / "none.rattn")])


def test_an_unexpected_error_is_one_line_too(monkeypatch, capsys):
    import minirattn.models as models

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(models, "list_models", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected ZeroDivisionError: a bug" in err and "--debug" in err


def test_a_closed_pipe_ends_quietly():
    """`minirattn models | head -1`: the reader goes away; no traceback, no error line."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "minirattn", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()                                     # what head does after its line
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "Broken pipe" not in err, err


@pytest.mark.parametrize("method", ["auto", "textbook"])
def test_an_empty_batch_gets_zero_gradients_as_in_pytorch(method):
    """Batch norm in evaluation mode and convolution with a bias on a batch of 0 images: the
    gradients of the parameters are zeros and the input's is empty, as PyTorch answers."""
    x, c3 = np.zeros((0, 3, 4, 4)), np.ones(3)
    y, cache = F.batchnorm2d_forward(x, c3, 0 * c3, 0 * c3, c3, training=False, method=method)
    dx, dgamma, dbeta = F.batchnorm2d_backward(y, cache)
    assert dx.shape == x.shape and not dgamma.any() and not dbeta.any() and dgamma.shape == (3,)
    conv_method = "im2col" if method == "textbook" else "auto"
    y, cache = F.conv2d_forward(x, np.ones((2, 3, 3, 3)), np.zeros(2), 1, 1, method=conv_method)
    dx, dw, db = F.conv2d_backward(y, cache)
    assert dx.shape == x.shape and dw.shape == (2, 3, 3, 3) and not dw.any() and db.shape == (2,)
    y, cache = F.conv2d_forward(x, np.ones((2, 3, 1, 1)), np.zeros(2))
    assert [g.shape for g in F.conv2d_backward(y, cache)] == [x.shape, (2, 3, 1, 1), (2,)]


def test_the_resume_message_prints_learning_rates_as_numbers(tmp_path):
    minirattn.train_cifar(iterations=4, eval_every=2, checkpoint_dir=str(tmp_path), lr=0.001,
                          **TINY)
    with pytest.raises(ValueError) as info:
        minirattn.train_cifar(iterations=8, eval_every=2, checkpoint_dir=str(tmp_path), lr=0.001,
                              resume=True, **TINY)
    message = str(info.value)
    assert "lr 1e-05 -> 0.0001 at iteration 4" in message, message    # not 1.0000000000000002e-05
    assert not re.search(r"\d\.\d{9,}", message), message
