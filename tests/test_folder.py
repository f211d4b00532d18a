"""Folders of images (data/folder.py): labels, decoding of every mode, the paper's ImageNet
augmentation, exact resume, clear errors, and a small network that learns from them."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from minirattn.data import DataError, FolderStream, channel_stats, load_dataset
from minirattn.data.folder import CROP_RATIO, CROP_SCALE, crop_window, eval_crop, load_rgb
from minirattn.training import StepSchedule, TrainConfig, train_cifar

CLASSES = ["cherry", "grass", "sky"]                       # red, green, blue
COLOURS = {"cherry": (200, 30, 40), "grass": (40, 180, 50), "sky": (30, 60, 210)}


def _image(rng, colour, w, h):
    base = np.asarray(colour, np.float64)[None, None, :]
    pixels = base + rng.normal(0, 25, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def make_folder(root, n_train=12, n_val=4, seed=0):
    """root/{train,val}/<class>/ with JPEG and PNG images of odd sizes, one greyscale, one RGBA
    and one CMYK per class and split, and a stray text file."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in CLASSES:
            d = os.path.join(root, split, c)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                im = _image(rng, COLOURS[c], int(rng.integers(40, 91)), int(rng.integers(40, 91)))
                mode, ext = [("RGB", "jpg"), ("RGB", "png"), ("L", "png"), ("RGBA", "png"),
                             ("CMYK", "jpg")][i % 5] if i < 5 else ("RGB", ["jpg", "png"][i % 2])
                im.convert(mode).save(os.path.join(d, f"{i:03d}.{ext}"))
            with open(os.path.join(d, "notes.txt"), "w") as f:
                f.write("not an image")
    return str(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("images"))


def test_labels_come_from_the_sorted_folder_names(folder):
    data = load_dataset("folder", folder, image_size=32)
    assert data.classes == CLASSES
    assert len(data.y_train) == 36 and len(data.y_test) == 12                # .txt ignored
    assert list(data.y_train) == [0] * 12 + [1] * 12 + [2] * 12
    assert data.x_train.shape == (36, 3, 32, 32) and data.image_shape == (3, 32, 32)
    x = data.x_test[:]                                  # decoded centre crops, uint8
    assert x.shape == (12, 3, 32, 32) and x.dtype == np.uint8
    # the colour of each class survives decoding (greyscale ones aside): red, green, blue
    for i, c in enumerate(CLASSES):
        colour_means = x[data.y_test == i].reshape(4, 3, -1).mean(axis=2)
        assert (colour_means.argmax(axis=1) == i).sum() >= 3, c


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16", "LA", "1"])
def test_every_mode_decodes_to_rgb(tmp_path, mode):
    im = _image(np.random.default_rng(1), (90, 120, 200), 37, 29)
    if mode == "I;16":                                   # 16-bit greyscale uses the full range
        im = Image.fromarray(np.asarray(im.convert("L"), np.uint16) * 257)
    else:
        im = im.convert(mode)
    path = str(tmp_path / ("x.tif" if mode in ("I;16", "CMYK") else "x.png"))
    im.save(path)
    rgb = load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (37, 29)
    x = eval_crop(rgb, 16)
    assert x.shape == (3, 16, 16) and x.dtype == np.uint8 and x.max() > 0


def test_crop_windows_span_the_papers_scales_and_ratios():
    rng = np.random.default_rng(0)
    W, H = 128, 128                    # square: accepted windows are symmetric in w and h
    scales, ratios = [], []
    for _ in range(3000):
        left, top, w, h = crop_window(W, H, rng)
        assert 0 <= left and left + w <= W and 0 <= top and top + h <= H
        scales.append(w * h / (W * H))
        ratios.append(w / h)
    scales, ratios = np.array(scales), np.array(ratios)
    # rounding w and h to whole pixels moves the area and ratio by a few percent at most
    assert scales.min() >= CROP_SCALE[0] * 0.9 and scales.max() <= CROP_SCALE[1]
    assert ratios.min() >= CROP_RATIO[0] * 0.95 and ratios.max() <= CROP_RATIO[1] * 1.05
    assert scales.min() < 0.12 and scales.max() > 0.9                # the whole range is used
    assert ratios.min() < 0.8 and ratios.max() > 1.25
    # log-uniform ratio: as many windows wider than tall as taller than wide (within noise)
    assert abs(np.mean(np.log(ratios))) < 0.03


def test_a_crop_too_big_for_any_draw_falls_back_to_a_centred_window():
    class Never:                       # every drawn window is larger than the image
        def uniform(self, lo, hi):
            return hi * 10 if lo > 0.05 and hi <= 1.0 else 0.0

        def integers(self, lo, hi):
            return lo
    left, top, w, h = crop_window(300, 100, Never())
    assert (w, h) == (133, 100) and (left, top) == (83, 0)            # ratio 4/3, centred


def test_eval_crop_is_the_centre_after_resizing_the_short_side():
    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3))
    x = eval_crop(Image.fromarray(ramp[:, :, :]), 56)           # 64 -> 64 (56 / .875 = 64)
    np.testing.assert_array_equal(x[0, 0], ramp[0, 4:60, 0])


def _stream(folder, seed=0, workers=2, batch_size=6):
    data = load_dataset("folder", folder, image_size=24, workers=workers)
    mean, std = channel_stats()
    return FolderStream(data.x_train, data.y_train, mean, std, batch_size, seed=seed)


def test_batches_are_a_function_of_seed_and_iteration_and_resume_exactly(folder):
    a = _stream(folder)
    run = [a.batch(i) for i in range(8)]                  # prefetching as training does
    b = _stream(folder, workers=1)
    x5, y5 = b.batch(5)                                   # a run resumed at iteration 5
    np.testing.assert_array_equal(x5, run[5][0])
    np.testing.assert_array_equal(y5, run[5][1])
    # a data-parallel rank decodes its shard only, and gets exactly that slice of the batch
    x_shard, y_shard = b.batch(5, 2, 5)
    np.testing.assert_array_equal(x_shard, run[5][0][2:5])
    np.testing.assert_array_equal(y_shard, run[5][1][2:5])
    c = _stream(folder, seed=1)
    assert not np.array_equal(c.batch(0)[0], run[0][0])
    # an epoch is a permutation: 36 images, 6 batches of 6, every image once
    firsts = np.concatenate([a._indices(i) for i in range(6)])
    assert sorted(firsts) == list(range(36))
    # normalised per channel: x = (pixel / 255 - mean) / std
    assert run[0][0].dtype == np.float32 and run[0][0].shape == (6, 3, 24, 24)
    assert -2.5 < run[0][0].min() and run[0][0].max() < 2.7


def test_close_stops_decoding_ahead_and_later_batches_still_come(folder):
    s = _stream(folder)
    x0, _ = s.batch(0)                                    # batch 1 is being decoded ahead
    s.close()
    assert s._prefetch is None and s._ahead is None
    s.close()                                             # twice is harmless
    np.testing.assert_array_equal(s.batch(1)[0], _stream(folder).batch(1)[0])
    assert s._ahead is None                               # closed: nothing decoded ahead


def test_flips_and_crops_differ_between_iterations(folder):
    s = _stream(folder, batch_size=36)                   # the whole epoch each batch
    x0, y0 = s.batch(0)
    x1, y1 = s.batch(1)
    assert sorted(y0) == sorted(y1) and not np.allclose(np.sort(x0.ravel()), np.sort(x1.ravel()))


# ---- bad input ----------------------------------------------------------------------------------
def test_missing_folder_and_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="needs data_dir"):
        load_dataset("folder", None)
    with pytest.raises(DataError, match=r"no folder .*train.*expected <data_dir>/train/<class>"):
        load_dataset("folder", str(tmp_path))


def test_a_single_class_is_refused(tmp_path):
    make_folder(tmp_path, 2, 1)
    for split in ("train", "val"):
        for c in CLASSES[1:]:
            for f in os.listdir(tmp_path / split / c):
                os.remove(tmp_path / split / c / f)
            os.rmdir(tmp_path / split / c)
    with pytest.raises(DataError, match=r"1 class folder\(s\) \(\['cherry'\]\).*at least 2"):
        load_dataset("folder", str(tmp_path))


def test_an_empty_class_folder_is_named(tmp_path):
    make_folder(tmp_path, 2, 1)
    os.makedirs(tmp_path / "train" / "dust")
    with pytest.raises(DataError, match=r"class folder .*dust' holds no images"):
        load_dataset("folder", str(tmp_path))


def test_splits_with_different_classes_are_refused(tmp_path):
    make_folder(tmp_path, 2, 1)
    os.rename(tmp_path / "val" / "sky", tmp_path / "val" / "ocean")
    with pytest.raises(DataError, match=r"differ from train's: \['ocean', 'sky'\]"):
        load_dataset("folder", str(tmp_path))


def test_a_corrupt_image_stops_with_its_name(tmp_path):
    make_folder(tmp_path, 2, 1)
    bad = tmp_path / "val" / "grass" / "000.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    data = load_dataset("folder", str(tmp_path), image_size=16)
    with pytest.raises(DataError, match=r"cannot decode image .*grass/000.jpg.*remove or replace"):
        data.x_test[:]


def test_images_smaller_than_the_crop_are_enlarged_with_a_warning(tmp_path):
    make_folder(tmp_path, 2, 1)
    data = load_dataset("folder", str(tmp_path), image_size=128)      # every image is <= 90
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = data.x_test[:]
    assert x.shape == (3, 3, 128, 128) and data.x_test.n_small == 3
    said = [str(w.message) for w in caught if "smaller than the 128-pixel crop" in str(w.message)]
    assert len(said) == 1 and "the first:" in said[0]                    # once, not per image


def test_image_size_belongs_to_folders_only():
    with pytest.raises(ValueError, match="image_size applies to dataset='folder' only"):
        TrainConfig(dataset="shapes", image_size=64)


def test_the_imagenet_schedule_scales_like_the_cifar_one():
    assert StepSchedule(0.1, 530_000, recipe="imagenet").milestones == (200_000, 400_000)
    assert StepSchedule(0.1, 5_300, recipe="imagenet").milestones == (2_000, 4_000)
    assert TrainConfig(dataset="folder").recipe == "imagenet"
    assert TrainConfig(dataset="shapes").recipe == "cifar"


# ---- training ------------------------------------------------------------------------------------
def test_a_small_network_learns_from_folder_images_at_64_pixels(tmp_path):
    root = make_folder(tmp_path / "images", n_train=40, n_val=10, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # some images are under 64 pixels: enlarged
        r = train_cifar(dataset="folder", data_dir=root, image_size=64,
                        arch="attentionnext56_imagenet", iterations=60, batch_size=12, lr=0.05,
                        eval_every=60, checkpoint_dir=str(tmp_path / "run"), progress=False,
                        model_kwargs=dict(widths=(64, 64, 64), stem_width=16, final_width=64,
                                          final_units=1, cardinality=8), workers=2)
    assert r.model.spec.input_size == 64
    # three classes: chance is 1/3; the colours make them easy to tell apart
    assert r.history[-1]["test_acc"] >= 0.8, r.history[-1]
    # the ImageNet recipe's milestones, 200/530 and 400/530 of 60: 23 and 45
    lrs = {row["iteration"]: row["lr"] for row in r.history}
    assert lrs[20] == 0.05 and lrs[30] == pytest.approx(0.005) and lrs[60] == pytest.approx(5e-4)


def test_the_command_line_trains_on_a_folder_and_evaluates_and_draws_the_checkpoint(
        folder, tmp_path, capsys):
    from minirattn.cli import main
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--procs", "1", "--dataset", "folder", "--data-dir", folder, "--image-size", "32",
                     "--arch", "attentionnext56_imagenet", "--iterations", "2", "--batch-size",
                     "6", "--eval-every", "2", "--workers", "2", "--checkpoint-dir", str(run),
                     "--no-progress"]) == 0
        assert main(["evaluate", "--checkpoint", str(run / "ckpt-00000002.rattn"),
                     "--data-dir", folder]) == 0
        out = capsys.readouterr().out
        assert "attentionnext56_imagenet on folder (iteration 2)" in out and "on 12 images" in out
        assert main(["masks", "--checkpoint", str(run / "ckpt-00000002.rattn"), "--data-dir",
                     folder, "--n", "2", "--out", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_a_folder_run_resumed_gives_exactly_the_weights_of_an_uninterrupted_one(folder, tmp_path):
    import shutil
    kw = dict(dataset="folder", data_dir=folder, image_size=32, arch="attentionnext56_imagenet",
              iterations=6, batch_size=6, eval_every=3, progress=False, workers=2,
              model_kwargs=dict(widths=(32, 32, 32), stem_width=8, final_width=32,
                                final_units=1, cardinality=4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = train_cifar(checkpoint_dir=str(tmp_path / "a"), **kw)
        shutil.copytree(tmp_path / "a", tmp_path / "b")
        os.remove(tmp_path / "b" / "ckpt-00000006.rattn")          # "interrupted" after 3
        resumed = train_cifar(checkpoint_dir=str(tmp_path / "b"), resume=True,
                              echo=lambda *a: None, **kw)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
