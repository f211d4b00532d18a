"""`minirattn predict` and predict_images: any picture brought to the network's input as the run's
data set brings its own, the classes and the masks over each picture; bad files named, the rest
still done."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minirattn
from helpers import TINY_RUN, need

need("PIL", "cli")


def _pictures(folder):
    from PIL import Image
    rng = np.random.default_rng(0)
    made = {"odd.png": rng.integers(0, 255, (37, 91, 3), dtype=np.uint8),
            "tall.jpg": rng.integers(0, 255, (130, 41, 3), dtype=np.uint8),
            "grey.png": rng.integers(0, 255, (29, 33), dtype=np.uint8),
            "alpha.png": rng.integers(0, 255, (40, 52, 4), dtype=np.uint8)}
    for name, a in made.items():
        Image.fromarray(a).save(folder / name)
    (folder / "notes.txt").write_text("not a picture")
    Image.fromarray(rng.integers(0, 255, (5, 60, 3), dtype=np.uint8)).save(folder / "thin.png")
    return [str(folder / n) for n in made], str(folder / "notes.txt"), str(folder / "thin.png")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    return minirattn.train(**TINY_RUN, iterations=4, eval_every=4,
                           checkpoint_dir=str(folder / "run")).checkpoint_path


def test_predict_reads_any_picture_and_draws_its_masks(checkpoint, tmp_path):
    good, text, thin = _pictures(tmp_path)
    out = tmp_path / "masks"
    done = subprocess.run([sys.executable, "-m", "minirattn", "predict", "--checkpoint", checkpoint,
                           "--out", str(out), *good, text, thin], capture_output=True, text=True)
    assert done.returncode == 2                                     # two files were not usable
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == good           # the others still done
    from minirattn.data.shapes import CLASSES
    for line in lines:
        classes = [part.strip().rsplit(" ", 1) for part in line.split(": ", 1)[1].split(" -> ")[0]
                   .split(",")]
        assert len(classes) == 3 and all(c in CLASSES for c, _ in classes)
        probs = [float(p.rstrip("%")) for _, p in classes]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.05
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 2 and "notes.txt" in errors[0] and "cannot decode image" in errors[0]
    assert "thin.png is 60x5 pixels: too small" in errors[1]
    written = sorted(os.listdir(out))
    assert written == ["alpha-masks.png", "grey-masks.png", "odd-masks.png", "tall-masks.png"]
    from PIL import Image
    with Image.open(out / "odd-masks.png") as im:
        assert im.size[0] > 400 and im.size[1] > 150                # the image and 3 masks


def test_predict_from_python_and_as_json(checkpoint, tmp_path):
    good, text, _ = _pictures(tmp_path)
    results, failures = minirattn.predict_images(checkpoint, good + [text], top=2)
    assert [r["file"] for r in results] == good and [f for f, _ in failures] == [text]
    assert all(len(r["top"]) == 2 and "masks" not in r for r in results)
    done = subprocess.run([sys.executable, "-m", "minirattn", "predict", "--checkpoint", checkpoint,
                           "--json", good[0]], capture_output=True, text=True)
    record = json.loads(done.stdout)
    assert done.returncode == 0 and record["failures"] == []
    assert record["results"][0]["top"][0][0] == results[0]["top"][0][0]
    # the same picture twice under one name: two mask pictures, not one overwritten
    results, _ = minirattn.predict_images(checkpoint, [good[0], good[0]], str(tmp_path / "o"))
    assert [os.path.basename(r["masks"]) for r in results] == ["odd-masks.png", "odd-2-masks.png"]


def test_predict_brings_a_picture_to_the_input_as_the_data_set_does(tmp_path):
    from PIL import Image
    from minirattn.data import kind
    a = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    x = kind("cifar10").image_input(str(tmp_path / "a.png"), (3, 32, 32))
    assert x.shape == (3, 32, 32) and x.dtype == np.uint8
    g = kind("fashion-mnist").image_input(str(tmp_path / "a.png"), (1, 32, 32))
    assert g.shape == (1, 32, 32) and g[:, :2].max() == 0 and g[:, :, -2:].max() == 0   # 28 + pad
    f = kind("folder").image_input(str(tmp_path / "a.png"), (3, 64, 64))
    assert f.shape == (3, 64, 64)


def test_predict_refuses_a_checkpoint_that_is_not_one_and_a_folder_it_cannot_write(checkpoint,
                                                                                  tmp_path):
    good, _, _ = _pictures(tmp_path)
    fake = tmp_path / "fake.rattn"
    fake.write_bytes(b"not a checkpoint")
    done = subprocess.run([sys.executable, "-m", "minirattn", "predict", "--checkpoint", str(fake),
                           good[0]], capture_output=True, text=True)
    assert done.returncode == 2 and "fake.rattn" in done.stderr and len(done.stderr.splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="folder .*file is a file, not a folder"):
        minirattn.predict_images(checkpoint, good, str(blocker))
