"""Training: label noise (Eq. 7), schedule, Nesterov SGD, checkpoints, exact resume, NaN stop, errors."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minirattn
from minirattn import functional as F, nn
from minirattn.training import (CheckpointError, SGD, StepSchedule, TrainingDiverged, add_label_noise,
                             evaluate_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint,
                             train_cifar)
from helpers import TINY_NET, TINY_RUN as TINY



# ---- label noise ---------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", [0.1, 0.3, 0.5, 0.7])
def test_label_noise_follows_eq7(noise):
    y = np.random.default_rng(0).integers(0, 10, 20000)
    y0 = y.copy()
    noisy, flipped = add_label_noise(y, noise, 10, seed=5)
    np.testing.assert_array_equal(y, y0)                                   # input untouched
    rate = len(flipped) / len(y)
    assert abs(rate - noise) < 4 * np.sqrt(noise * (1 - noise) / len(y))  # 4 sigma
    changed = np.flatnonzero(noisy != y)
    np.testing.assert_array_equal(changed, flipped)                       # never the true class
    keep = np.setdiff1d(np.arange(len(y)), flipped)
    np.testing.assert_array_equal(noisy[keep], y[keep])
    # uniform over the other K - 1 classes: the offset (noisy - y) mod K is uniform on 1..K-1
    offsets = np.bincount((noisy[flipped] - y[flipped]) % 10, minlength=10)
    assert offsets[0] == 0
    expected = len(flipped) / 9
    chi2 = ((offsets[1:] - expected) ** 2 / expected).sum()
    assert chi2 < 27.9                                                     # chi2(8 dof) at p = 0.0005
    again, _ = add_label_noise(y, noise, 10, seed=5)
    np.testing.assert_array_equal(again, noisy)                           # seed-reproducible
    assert not np.array_equal(add_label_noise(y, noise, 10, seed=6)[0], noisy)


def test_label_noise_bad_input():
    with pytest.raises(ValueError, match=r"label_noise: expected a number in \[0, 1\), got 1.0"):
        add_label_noise(np.zeros(3, int), 1.0, 10)
    assert len(add_label_noise(np.zeros(5, int), 0.0, 10)[1]) == 0


# ---- schedule and optimiser ------------------------------------------------------------------------
def test_step_schedule_is_the_papers_scaled():
    s = StepSchedule(0.1)
    assert s.milestones == (64_000, 96_000)
    assert [s(0), s(63_999), s(64_000), s(95_999), s(96_000), s(159_999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    short = StepSchedule(0.1, iterations=1000)
    assert short.milestones == (400, 600) and short(399) == 0.1 and short(400) == pytest.approx(0.01)


class _Two(nn.Module):
    """One conv-like weight (decayed) and one BN-like 1-D weight (not decayed)."""

    def __init__(self):
        super().__init__()
        self.params = {"weight": np.array([[1.0, -2.0]]), "bn_weight": np.array([0.5])}
        self._init_grads()


def test_nesterov_and_weight_decay_against_hand_computed_values():
    m = _Two()
    opt = SGD(m, lr=0.1, momentum=0.9, weight_decay=0.01)
    g = np.array([[0.2, 0.4]])
    m.grads["weight"][...] = g
    m.grads["bn_weight"][...] = 0.3
    opt.step()
    # step 1: g' = g + wd w = [0.21, 0.38]; v = g'; w -= lr (g' + mu v) = lr * 1.9 g'
    np.testing.assert_allclose(m.params["weight"], [[1 - 0.1 * 1.9 * 0.21, -2 - 0.1 * 1.9 * 0.38]])
    np.testing.assert_allclose(m.params["bn_weight"], [0.5 - 0.1 * 1.9 * 0.3])  # no decay on BN
    w1 = m.params["weight"].copy()
    opt.step()                       # same raw gradients again
    g2 = g + 0.01 * w1
    v2 = 0.9 * np.array([[0.21, 0.38]]) + g2
    np.testing.assert_allclose(m.params["weight"], w1 - 0.1 * (g2 + 0.9 * v2))
    assert opt.decay == {"weight": True, "bn_weight": False}


def _views_of_the_buffers(model, opt):
    """Every parameter, gradient and velocity is a view into its dtype's flat buffer."""
    (group,) = opt.groups.values()
    for name, p, g in model.named_parameters():
        start, stop = group.slices[name]
        for tensor, flat in ((p, group.params), (g, group.grads), (opt.velocity[name], opt._velocity["float32"])):
            assert np.shares_memory(tensor, flat[start:stop]), name
    return group


def test_parameters_gradients_and_velocities_are_views_of_flat_buffers(tmp_path):
    from minirattn.models import build
    net = build("attention56", num_classes=10, **TINY_NET)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    opt = SGD(net, lr=0.1)
    group = _views_of_the_buffers(net, opt)
    for k, v in net.state_dict().items():                    # values kept
        np.testing.assert_array_equal(v, before[k])
    decayed = [n for n, p, _ in net.named_parameters() if opt.decay[n]]
    assert decayed and group.n_first == sum(p.size for n, p, _ in net.named_parameters() if opt.decay[n])
    assert all(group.slices[n][1] <= group.n_first for n in decayed)          # decayed weights first
    net.load_state_dict({k: v + 1 for k, v in before.items()})
    _views_of_the_buffers(net, opt)
    group.grads[:] = 1.0
    net.zero_grad()
    assert all((g == 0).all() for _, _, g in net.named_parameters())
    net.to("numpy", dtype="float64")                         # moved: laid out again
    assert all(np.shares_memory(p, net._flat["float64"].params) for _, p, _ in net.named_parameters())


def test_the_flat_step_equals_the_step_tensor_by_tensor():
    """One whole-buffer update gives bit for bit what Nesterov with weight decay gives per tensor."""
    from minirattn.models import build
    net = build("attention56", num_classes=10, **TINY_NET)
    rng = np.random.default_rng(0)
    for _, _, g in net.named_parameters():
        g[...] = rng.standard_normal(g.shape)
    expected = {}
    for name, p, g in net.named_parameters():
        gg = g + 1e-4 * p if name.endswith("weight") and p.ndim > 1 else g
        v = gg                                               # first step: v = 0.9 * 0 + g'
        expected[name] = p - 0.1 * (gg + 0.9 * v)
    SGD(net, lr=0.1, momentum=0.9, weight_decay=1e-4).step()
    for name, p, _ in net.named_parameters():
        np.testing.assert_array_equal(p, expected[name].astype(p.dtype), err_msg=name)


# ---- checkpoints ----------------------------------------------------------------------------------
def test_checkpoint_round_trip_and_corruption_detected(tmp_path):
    arrays = {"a": np.arange(5.0, dtype=np.float32), "b": np.ones((2, 3))}
    path = save_checkpoint(str(tmp_path / "c.rattn"), arrays, {"iteration": 7})
    got, meta = load_checkpoint(path)
    assert meta == {"iteration": 7}
    np.testing.assert_array_equal(got["a"], arrays["a"])
    raw = bytearray(open(path, "rb").read())
    raw[-10] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    open(path, "wb").write(bytes(raw[:50]))
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nope.rattn"))


def test_a_write_killed_midway_leaves_the_previous_checkpoint_readable(tmp_path):
    path = str(tmp_path / "ckpt.rattn")
    save_checkpoint(path, {"w": np.zeros(3)}, {"iteration": 1})
    child = textwrap.dedent(f"""
        import os, signal, numpy as np
        from minirattn.training import checkpoint as c
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)   # die after writing, before rename
        c.save_checkpoint({path!r}, {{"w": np.ones(1_000_000)}}, {{"iteration": 2}})
    """)
    proc = subprocess.run([sys.executable, "-c", child])
    assert proc.returncode == -signal.SIGKILL
    arrays, meta = load_checkpoint(path)                   # the old one, intact
    assert meta["iteration"] == 1 and arrays["w"].shape == (3,)


# ---- the loop ----------------------------------------------------------------------------------
def test_train_cifar_runs_and_writes_checkpoints_and_metrics(tmp_path):
    r = train_cifar(iterations=4, eval_every=2, log_every=1, checkpoint_dir=str(tmp_path), **TINY)
    assert [h["iteration"] for h in r.history] == [1, 2, 3, 4]
    assert "test_acc" in r.history[1] and "test_acc" in r.history[3]
    assert all(np.isfinite(h["loss"]) and h["images_per_s"] > 0 for h in r.history)
    assert 0 <= r.final_test_accuracy <= 1 and r.final_test_error == pytest.approx(1 - r.final_test_accuracy)
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == ["ckpt-00000002.rattn",
                                                                               "ckpt-00000004.rattn"]
    assert os.path.exists(r.metrics_path) and "test accuracy" in r.summary()
    ev = evaluate_checkpoint(r.checkpoint_path)
    assert ev["accuracy"] == pytest.approx(r.final_test_accuracy) and ev["n_test"] == 32


def test_resume_gives_exactly_the_weights_of_an_uninterrupted_run(tmp_path):
    full = train_cifar(iterations=6, eval_every=3, checkpoint_dir=str(tmp_path / "a"), label_noise=0.2, **TINY)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    os.remove(tmp_path / "b" / "ckpt-00000006.rattn")        # "interrupted" after iteration 3
    resumed = train_cifar(iterations=6, eval_every=3, checkpoint_dir=str(tmp_path / "b"), resume=True,
                          label_noise=0.2, echo=lambda *a: None, **TINY)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [h["iteration"] for h in resumed.history] == [h["iteration"] for h in full.history]


def test_resume_with_different_settings_is_refused(tmp_path):
    train_cifar(iterations=4, eval_every=2, checkpoint_dir=str(tmp_path), **TINY)
    with pytest.raises(ValueError, match="another run.*seed 0 there, 1 now"):
        train_cifar(iterations=4, eval_every=2, checkpoint_dir=str(tmp_path), resume=True, seed=1, **TINY)
    with pytest.raises(ValueError, match=r"iterations=8: the run was set up for 4.*milestones from "
                                         r"\(2, 2\) to \(3, 5\)"):
        train_cifar(iterations=8, eval_every=2, checkpoint_dir=str(tmp_path), resume=True, **TINY)


def test_resume_with_nothing_to_resume(tmp_path):
    with pytest.raises(ValueError, match="nothing to resume in .*empty.*resume='auto'"):
        train_cifar(iterations=2, eval_every=2, checkpoint_dir=str(tmp_path / "empty"), resume=True, **TINY)
    said = []
    r = train_cifar(iterations=2, eval_every=2, checkpoint_dir=str(tmp_path / "empty"), resume="auto",
                    echo=said.append, **TINY)
    assert any("nothing to resume" in s and "starting a new run" in s for s in said)
    assert r.checkpoint_path.endswith("ckpt-00000002.rattn")


def test_work_is_kept_by_default_in_a_new_run_folder(tmp_path):
    """train_cifar writes to runs/<dataset>-<arch> (of the working directory), a new run never
    overwrites an earlier one, and checkpoint_dir=None keeps nothing."""
    a = train_cifar(iterations=2, eval_every=2, **TINY)
    b = train_cifar(iterations=2, eval_every=2, **TINY)
    assert a.checkpoint_path == os.path.join("runs", "shapes-attention56", "ckpt-00000002.rattn")
    assert b.checkpoint_path == os.path.join("runs", "shapes-attention56-2", "ckpt-00000002.rattn")
    assert os.path.exists(a.metrics_path) and os.path.exists(b.metrics_path)
    c = train_cifar(iterations=2, eval_every=2, checkpoint_dir=None, **TINY)
    assert c.checkpoint_path is None and c.metrics_path is None
    assert sorted(os.listdir("runs")) == ["shapes-attention56", "shapes-attention56-2"]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # inf weights, meant
def test_a_blow_up_keeps_a_good_checkpoint_and_a_lower_lr_resumes_it(tmp_path):
    """The weights turn non-finite in the last step before an evaluation (that window's mean loss
    is still finite): no checkpoint is written from that state, the message names the previous
    one, that one evaluates to a finite loss, and resuming it with a lower lr trains on, the
    change recorded in the checkpoints and metrics.json."""
    from minirattn.training import TrainConfig, train, train_step
    calls = {"n": 0}

    def blows_up_at_4(model, optimizer, x, y, lr):
        out = train_step(model, optimizer, x, y, lr)
        calls["n"] += 1
        if calls["n"] == 4:
            model.parameters()[0][...] = np.inf              # what a far too large step does
        return out
    config = TrainConfig(iterations=6, eval_every=2, log_every=2, checkpoint_dir=str(tmp_path), **TINY)
    with pytest.raises(TrainingDiverged, match=r"test loss became nan.*last good checkpoint is "
                                               r".*ckpt-00000002.*lower lr"):
        train(config, step=blows_up_at_4, echo=lambda *a: None)
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == ["ckpt-00000002.rattn"]
    assert np.isfinite(evaluate_checkpoint(str(tmp_path / "ckpt-00000002.rattn"))["loss"])
    r = train(config.replace(resume=True, lr=0.01), echo=lambda *a: None)
    assert r.history[-1]["iteration"] == 6 and np.isfinite(r.history[-1]["test_loss"])
    assert r.config["resumes"] == [dict(iteration=2, checkpoint="ckpt-00000002.rattn",
                                        changed={"lr": [0.1, 0.01]})]
    with open(r.metrics_path) as f:
        assert json.load(f)["config"]["resumes"] == r.config["resumes"]
    assert r.history[-1]["lr"] == pytest.approx(0.0001)          # the new base lr, scheduled


def test_checkpoint_folder_is_checked_before_training_and_stale_temporaries_go(tmp_path):
    from minirattn.training import CheckpointWriteError
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointWriteError, match="is a file, not a folder"):
        train_cifar(iterations=2, eval_every=2, checkpoint_dir=str(tmp_path / "file"), **TINY)
    with pytest.raises(CheckpointWriteError, match="cannot write in checkpoint_dir .*file/run"):
        train_cifar(iterations=2, eval_every=2, checkpoint_dir=str(tmp_path / "file" / "run"), **TINY)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".tmp-abc.ckpt").write_bytes(b"half a checkpoint")
    (run / "metrics.json.tmp").write_text("{")
    (run / ".tmp-def.part").write_text("{")
    said = []
    train_cifar(iterations=2, eval_every=2, checkpoint_dir=str(run), echo=said.append, **TINY)
    assert sorted(os.listdir(run)) == ["ckpt-00000002.rattn", "metrics.json"]
    assert sum("left by an interrupted write" in s for s in said) == 3


def _mount_tmpfs(path, size):
    path.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {out.stderr.strip()}")


def test_a_full_disk_names_the_file_and_the_checkpoint_that_survived(tmp_path):
    """On a tmpfs with room for one checkpoint: the second write fails with a message naming the
    file, the cause and the first checkpoint; nothing partial is left; the first checkpoint reads
    back and resumes (elsewhere) to exactly the weights of an uninterrupted run."""
    from minirattn.training import CheckpointWriteError
    whole = train_cifar(iterations=4, eval_every=1, checkpoint_dir=str(tmp_path / "whole"), **TINY)
    size = os.path.getsize(whole.checkpoint_path)
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, (size + 8192 + size // 2) // 4096 * 4096)
    try:
        said = []
        with pytest.raises(CheckpointWriteError, match=r"could not write .*disk.*No space left on device.*"
                                                      r"last good checkpoint is .*ckpt-00000001"):
            train_cifar(iterations=4, eval_every=1, checkpoint_dir=str(disk), echo=said.append, **TINY)
        assert any(s.startswith("warning:") and "MiB free" in s for s in said), said
        left = sorted(os.listdir(disk))
        assert left in (["ckpt-00000001.rattn", "metrics.json"], ["ckpt-00000001.rattn"]), left
        load_checkpoint(str(disk / "ckpt-00000001.rattn"))
        shutil.copytree(disk, tmp_path / "moved")
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    resumed = train_cifar(iterations=4, eval_every=1, checkpoint_dir=str(tmp_path / "moved"), resume=True,
                          echo=lambda *a: None, **TINY)
    for k, v in whole.model.state_dict().items():
        np.testing.assert_array_equal(v, resumed.model.state_dict()[k], err_msg=k)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = F.softmax_cross_entropy
    calls = {"n": 0}

    def poisoned(logits, labels, validate=True):
        calls["n"] += 1
        loss, d = real(logits, labels, validate)
        return (loss * np.nan if calls["n"] > 3 else loss), d
    monkeypatch.setattr(F, "softmax_cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged, match=r"became nan.*last good checkpoint is .*ckpt-00000002"):
        train_cifar(iterations=8, eval_every=2, log_every=2, checkpoint_dir=str(tmp_path), **TINY)
    paths = list_checkpoints(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["ckpt-00000002.rattn"]
    arrays, _ = load_checkpoint(paths[0])
    assert all(np.isfinite(v).all() for v in arrays.values())


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(dataset="imagenet"), ValueError, "unknown dataset 'imagenet'"),
    (dict(arch="resnet50"), ValueError, "unknown arch 'resnet50'"),
    (dict(batch_size=0), ValueError, "batch_size: expected an int >= 1, got 0"),
    (dict(batch_size=-3), ValueError, "batch_size: expected an int >= 1, got -3"),
    (dict(label_noise=1.0), ValueError, r"label_noise: expected a number in \[0, 1\), got 1.0"),
    (dict(label_noise=-0.1), ValueError, r"label_noise: expected a number in \[0, 1\)"),
    (dict(iterations=0), ValueError, "iterations: expected an int >= 1"),
    (dict(backend="cupy"), minirattn.backend.BackendError, "cupy"),
    (dict(resume=True, checkpoint_dir=None), ValueError, "resume=True needs checkpoint_dir"),
])
def test_bad_arguments_fail_before_training(kwargs, exc, words):
    if kwargs.get("backend") == "cupy":
        try:
            minirattn.backend.get("cupy")
            pytest.skip("CuPy and a GPU are present")
        except minirattn.backend.BackendError:
            pass
    args = dict(dataset="shapes", n_train=16, n_test=8, progress=False)
    args.update(kwargs)
    with pytest.raises(exc, match=words):
        train_cifar(**args)


def test_missing_or_empty_data_folders_and_wrong_md5(tmp_path):
    from minirattn.data import DataError
    with pytest.raises(DataError, match="cifar10 not found"):
        train_cifar(dataset="cifar10", data_dir=str(tmp_path), progress=False)
    with pytest.raises(DataError, match="Fashion-MNIST not found"):
        train_cifar(dataset="fashion-mnist", data_dir=str(tmp_path / "missing"), progress=False)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="corrupt or truncated"):
        train_cifar(dataset="cifar10", data_dir=str(tmp_path), progress=False)


# ---- the training configuration and the loop's parts -----------------------------------------
def test_config_is_validated_at_construction_and_round_trips_through_a_checkpoint(tmp_path):
    from minirattn.training import TrainConfig
    with pytest.raises(ValueError, match="unknown mask_activation 'soft'"):
        TrainConfig(mask_activation="soft")
    with pytest.raises(ValueError, match="unknown mask_activation 'soft'"):
        TrainConfig(attention="soft")                                    # its earlier name
    old = TrainConfig(attention="spatial")
    assert old.mask_activation == "spatial" and "attention" not in old.to_dict()
    assert old == TrainConfig(mask_activation="spatial")
    assert TrainConfig.from_dict(dict(attention="channel")).mask_activation == "channel"
    earlier = {k: v for k, v in old.to_dict().items() if k != "mask_activation"}
    assert old.differences(dict(earlier, attention="spatial")) == {}   # a record of before
    with pytest.raises(ValueError, match="attention is the earlier name of mask_activation"):
        TrainConfig(attention="spatial", mask_activation="channel")
    with pytest.raises(TypeError, match="eval_every: expected an int, got float 2.5"):
        TrainConfig(eval_every=2.5)
    with pytest.raises(ValueError, match=r"momentum: expected a number in \[0, 1\)"):
        TrainConfig(momentum=1.0)
    config = TrainConfig(iterations=2, eval_every=2, checkpoint_dir=str(tmp_path), **TINY)
    r = minirattn.training.train(config, echo=lambda *a: None)
    _, meta = load_checkpoint(r.checkpoint_path)
    with open(r.metrics_path) as f:
        metrics = json.load(f)
    assert meta["config"] == metrics["config"] == r.config
    again = TrainConfig.from_dict(meta["config"], checkpoint_dir=str(tmp_path))
    assert again.to_dict() == config.to_dict() and again.differences(meta["config"]) == {}
    assert config.replace(seed=3).differences(meta["config"]) == {"seed": (0, 3)}
    assert config.replace(lr=0.5).differences(meta["config"]) == {}                 # lr may change
    assert config.replace(lr=0.5).differences(meta["config"], identity=False) == {"lr": (0.1, 0.5)}
    assert "data_dir" not in meta["config"] and meta["config"]["model"]["spec"]["input_size"] == 32


def test_the_step_is_a_seam_that_the_loop_calls_once_per_iteration(tmp_path):
    """train(config, step=...) runs another step in the same loop (what a data-parallel step
    plugs into): called once per iteration with the batch on the device and the scheduled lr."""
    from minirattn.training import TrainConfig, train, train_step
    calls = []

    def counting_step(model, optimizer, x, y, lr):
        calls.append((x.shape, y.shape, lr))
        return train_step(model, optimizer, x, y, lr)
    config = TrainConfig(iterations=5, eval_every=5, **TINY)
    r = train(config, step=counting_step, echo=lambda *a: None)
    assert [c[0] for c in calls] == [(8, 3, 32, 32)] * 5 and [c[1] for c in calls] == [(8,)] * 5
    assert [c[2] for c in calls] == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.001])   # 40% / 60% milestones
    assert r.config["threads"] == 1
    plain = train_cifar(iterations=5, eval_every=5, echo=lambda *a: None, **TINY)
    for k, v in plain.model.state_dict().items():
        np.testing.assert_array_equal(v, r.model.state_dict()[k], err_msg=k)


def test_evaluation_and_masks_read_the_test_images_training_used(tmp_path):
    from minirattn.training import load_test_split, load_trained, prepare_data, TrainConfig
    config = TrainConfig(iterations=2, eval_every=2, checkpoint_dir=str(tmp_path), **TINY)
    r = minirattn.training.train(config, echo=lambda *a: None)
    _, _, meta = load_trained(r.checkpoint_path)
    data = prepare_data(config, echo=lambda *a: None)
    test = load_test_split(meta)
    np.testing.assert_array_equal(test.x_test, data.x_test)
    assert len(test.y_train) == 0                                   # the training split is not made
    np.testing.assert_array_equal(load_test_split(meta, n_test=5).x_test, data.x_test[:5])


# ---- the loop's shape ----------------------------------------------------------------------------
def test_no_function_in_the_training_package_is_longer_than_60_lines():
    import ast
    import pathlib
    root = pathlib.Path(minirattn.__file__).parent / "training"
    long = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{path.name}::{node.name} ({n} lines)")
    assert len(list(root.glob("*.py"))) >= 8 and not long, long


def test_only_the_data_package_tells_the_data_set_kinds_apart():
    import pathlib
    import re
    root = pathlib.Path(minirattn.__file__).parent
    pattern = re.compile(r"""(==|!=|\bin)\s*\(?["']folder["']|["']folder["']\s*(==|!=)""")
    found = [f"{p.relative_to(root)}:{i}" for p in sorted(root.rglob("*.py"))
             if p.parent.name != "data"
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found
    from minirattn.data import DATASETS, kind
    assert [kind(n).recipe for n in DATASETS] == ["cifar"] * 4 + ["imagenet"]
    from minirattn.training import TrainConfig
    c = TrainConfig.from_settings(dataset="folder")
    assert (c.iterations, c.batch_size) == (530_000, 256)
    assert TrainConfig.from_settings(dataset="folder", batch_size=8).batch_size == 8


def test_train_is_the_public_name_and_callbacks_see_every_iteration(tmp_path):
    seen = []

    class Record:
        def __call__(self, run):
            seen.append((run.iteration, run.row is not None, run.evaluated, round(run.lr, 9)))

        def close(self, run):
            seen.append("closed")

    r = minirattn.train(**TINY, iterations=6, eval_every=3, log_every=2, lr=0.05,
                        checkpoint_dir=None, callbacks=[Record()])
    # milestones at 40% and 60% of 6 iterations: after steps 2 and 4
    assert seen == [(1, False, False, 0.05), (2, True, False, 0.05), (3, True, True, 0.005),
                    (4, True, False, 0.005), (5, False, False, 0.0005),
                    (6, True, True, 0.0005), "closed"]
    assert [h["iteration"] for h in r.history] == [2, 3, 4, 6]
    assert "test_acc" in r.history[1] and "test_acc" not in r.history[2]
    same = train_cifar(**TINY, iterations=6, eval_every=3, log_every=2, lr=0.05, checkpoint_dir=None)
    assert same.final_test_accuracy == r.final_test_accuracy       # train_cifar is the same call
    from minirattn.training import TrainConfig
    config = TrainConfig(**TINY, iterations=6, eval_every=3, log_every=2, checkpoint_dir=None)
    changed = minirattn.train(config, lr=0.05)                      # a config, with changes
    assert changed.final_test_accuracy == r.final_test_accuracy
    assert changed.config["lr"] == 0.05


def test_a_callback_stops_a_run_as_the_architecture_page_shows(tmp_path):
    class StopAt:
        def __init__(self, accuracy):
            self.accuracy = accuracy

        def __call__(self, run):
            if run.evaluated and run.test_acc >= self.accuracy:
                run.stop = True

    r = minirattn.train(**TINY, iterations=8, eval_every=2, log_every=2,
                        checkpoint_dir=str(tmp_path / "run"), callbacks=[StopAt(0.0)])
    assert [h["iteration"] for h in r.history] == [2]                # stopped at the first test
    assert r.checkpoint_path.endswith("ckpt-00000002.rattn") and os.path.exists(r.checkpoint_path)
    assert r.final_test_accuracy == r.history[-1]["test_acc"]


def test_the_schedule_is_made_in_one_place():
    from minirattn.training import TrainConfig
    c = TrainConfig(iterations=1000, lr=0.2)
    assert c.schedule().milestones == (400, 600) and c.schedule()(400) == pytest.approx(0.02)
    assert c.schedule(2000).milestones == (800, 1200)
    f = TrainConfig(dataset="folder", iterations=530)
    assert f.schedule().milestones == (200, 400)


def test_one_process_is_a_data_parallel_run_of_one_rank():
    from minirattn import distributed as D
    p = D.DataParallel.for_run(False, 64)
    assert (p.ranks, p.lead, p.shard(64), p.step_kwargs(), p.describe()) == (1, True, (0, 64), {}, "")
    model = minirattn.models.build("attention56", **TINY_NET)
    before = model.state_dict()["stem.0.weight"].copy()
    p.prepare(model)
    p.before_test(model)
    p.check_same_weights(model, 1)
    np.testing.assert_array_equal(model.state_dict()["stem.0.weight"], before)
