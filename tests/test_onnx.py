"""ONNX export, checked by ONNX Runtime: every registered network, every ablation, the full-width
networks and a trained checkpoint with its classes and normalisation in the metadata."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minirattn
from minirattn.models import REGISTRY, build
from helpers import ABLATIONS, TINY_NET, TINY_RUN, narrow, need, network_input, with_running_stats

onnx = need("onnx", "onnx")
ort = need("onnxruntime", "onnx")


def onnx_logits(model, x, tmp_path, **meta):
    path = minirattn.export_onnx(model, str(tmp_path / "model.onnx"), **meta)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0], path


def assert_same_logits(model, x, tmp_path):
    """ONNX Runtime's logits equal minirattn's evaluation-mode forward to 1e-4 (relative to the
    largest logit, at least 1) and give the same classes."""
    with model.mode(False):
        ours = model(x)
    theirs, _ = onnx_logits(model, x, tmp_path)
    scale = max(1.0, float(np.abs(ours).max()))
    assert np.abs(theirs - ours).max() <= 1e-4 * scale, np.abs(theirs - ours).max()
    np.testing.assert_array_equal(theirs.argmax(1), ours.argmax(1))


# ---- ONNX: every network, every ablation, full width, a trained checkpoint ------------------
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_network_exports_and_onnx_runtime_agrees(name, tmp_path):
    model = with_running_stats(build(name, num_classes=7, **narrow(name)))
    assert_same_logits(model, network_input(model), tmp_path)


@pytest.mark.parametrize("activation,learning,mask", ABLATIONS)
def test_every_mask_activation_learning_rule_and_mask_exports(activation, learning, mask, tmp_path):
    # 16 channels, not TINY_NET's 8: with 8, float32 round-off alone (ours and ONNX Runtime's
    # alike) moves naive learning's logits by ~1e-4 from the float64 answer
    model = with_running_stats(build("attention56", mask_activation=activation, learning=learning,
                                     mask=mask, widths=(16, 16, 32), stem_width=8, final_width=32,
                                     final_units=1))
    assert_same_logits(model, network_input(model), tmp_path)


@pytest.mark.parametrize("name", ["attention56", "attention92", "attention56_imagenet"])
def test_full_width_networks_export_and_agree(name, tmp_path):
    model = with_running_stats(build(name, num_classes=1000 if "imagenet" in name else 10))
    x = network_input(model, n=2 if "imagenet" not in name else 1)
    assert_same_logits(model, x, tmp_path)
    # the batch is dynamic: another batch size runs on the same file
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    assert session.run(None, {"input": np.concatenate([x, x])})[0].shape[0] == 2 * len(x)


def test_a_trained_checkpoint_exports_with_its_classes_and_normalisation(tmp_path):
    r = minirattn.train(**TINY_RUN, iterations=4, eval_every=4, checkpoint_dir=str(tmp_path / "run"))
    out = tmp_path / "demo.onnx"
    done = subprocess.run([sys.executable, "-m", "minirattn", "export", "--checkpoint",
                           r.checkpoint_path, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == str(out), done.stderr
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    from minirattn.data.shapes import CLASSES
    assert json.loads(meta["minirattn.classes"]) == CLASSES
    assert meta["minirattn.network"] == "attention56"
    assert json.loads(meta["minirattn.settings"]) == dict(mask_activation="mixed", learning="arl",
                                                          mask="soft")
    norm = json.loads(meta["minirattn.normalization"])
    model, mean, _ = minirattn.training.load_trained(r.checkpoint_path)
    assert norm["kind"] == "mean_image"
    np.testing.assert_allclose(np.asarray(norm["mean"]), mean, rtol=1e-7)
    # the user's side: uint8 images normalised from the metadata alone, then ONNX Runtime
    data = minirattn.data.make_shapes(8, 16, seed=0)
    x = (data.x_test / 255 - np.asarray(norm["mean"])).astype(np.float32)
    theirs = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    with model.mode(False):
        ours = model(minirattn.data.normalize(data.x_test, mean))
    assert np.abs(theirs - ours).max() <= 1e-4 * max(1.0, np.abs(ours).max())
    np.testing.assert_array_equal(theirs.argmax(1), ours.argmax(1))


def test_folder_runs_record_their_per_channel_normalisation(tmp_path):
    from minirattn.interop.onnx import normalization_record
    from minirattn.data import channel_stats
    mean, std = channel_stats()
    record = normalization_record(mean, std)
    assert record == {"kind": "per_channel", "scale": 1 / 255, "mean": mean.reshape(-1).tolist(),
                      "std": std.reshape(-1).tolist()}


def test_export_refuses_what_it_cannot_write(tmp_path):
    model = build("attention56", **TINY_NET)
    with pytest.raises(OSError, match="the folder .* does not exist"):
        minirattn.export_onnx(model, str(tmp_path / "missing" / "m.onnx"))
    with pytest.raises(TypeError, match="expected a minirattn network"):
        minirattn.export_onnx(model.stage1, str(tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="3 class names for a network of 10 classes"):
        minirattn.export_onnx(model, str(tmp_path / "m.onnx"), classes=["a", "b", "c"])
    assert not os.listdir(tmp_path)                                # nothing half-written


