"""Pictures render on a tiny model and are valid PNGs of the expected size."""
import struct

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="pictures need the `cli` extra (matplotlib)")

from minirattn.cli import main
from minirattn.data import make_shapes, normalize, pixel_mean
from minirattn.models import build, collect_masks, feature_response
from minirattn.viz import mask_maps, mask_region_gap, mask_region_share, plot_feature_response, plot_masks, plot_training_curves
from helpers import TINY_NET as TINY



def png_size(path):
    raw = open(path, "rb").read(24)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", raw[16:24])


def test_masks_picture(tmp_path):
    d = make_shapes(8, 2, seed=0)
    net = build("attention56", seed=0, **TINY)
    x = normalize(d.x_test, pixel_mean(d.x_train))
    maps = mask_maps(net, x)
    assert list(maps) == ["stage1.1", "stage2.1", "stage3.1"]
    assert all(m.shape == (2, 32, 32) for m in maps.values())
    path = plot_masks(net, x, d.x_test, str(tmp_path / "m.png"), d.classes, d.y_test, d.y_test)
    assert png_size(path) == (640, 395)    # (1 + 3 modules) x 2 images of 1.6 in, + 0.75 in of bars
                                           # and legend, at 100 dpi


def test_every_panel_of_a_module_shares_one_colour_scale_shown_by_its_bar(tmp_path):
    from minirattn.viz import MASK_LEGEND, mask_figure
    d = make_shapes(8, 3, seed=0)
    net = build("attention56", seed=0, **TINY)
    x = normalize(d.x_test, pixel_mean(d.x_train))
    maps = mask_maps(net, x)
    fig, overlays, bars = mask_figure(net, x, d.x_test, d.classes, d.y_test, d.y_test)
    assert list(overlays) == list(bars) == list(maps)
    for name, images in overlays.items():
        assert len(images) == 3
        lo, hi = float(maps[name].min()), float(maps[name].max())
        assert all(im.get_clim() == (lo, hi) for im in images)          # one scale per module
        value = (lo + hi) / 2
        assert len({tuple(im.to_rgba(np.array([[value]]))[0, 0]) for im in images}) == 1  # one colour
        assert bars[name].mappable.get_clim() == (lo, hi)              # the bar shows that scale
    assert any(t.get_text() == MASK_LEGEND for t in fig.texts) and "true class / predicted" in MASK_LEGEND


def tiny_net_and_objects():
    """A tiny Attention-56, six normalised shapes test images and their bright-object pixels,
    with the first image's region emptied (such images must be left out)."""
    d = make_shapes(8, 6, seed=1)
    x = normalize(d.x_test, pixel_mean(d.x_train))
    region = d.x_test.min(axis=1) > 150
    region[0] = False
    return build("attention56", seed=0, **TINY), x, region


def test_mask_region_share_against_a_loop():
    net, x, region = tiny_net_and_objects()
    maps = mask_maps(net, x)
    shares = mask_region_share(net, x, region)
    for name, m in maps.items():
        kept = [i for i in range(len(m)) if region[i].any() and not region[i].all()]
        expected = np.mean([m[i][region[i]].mean() > m[i][~region[i]].mean() for i in kept])
        assert shares[name] == pytest.approx(expected)
    with pytest.raises(ValueError, match="region must have shape"):
        mask_region_share(net, x, region[:, :16])
    with pytest.raises(ValueError, match="empty or full"):
        mask_region_share(net, x, np.zeros_like(region))


def test_mask_region_gap_against_a_loop():
    net, x, region = tiny_net_and_objects()
    gaps = mask_region_gap(net, x, region)
    for name, m in collect_masks(net, x).items():
        m = np.asarray(m, dtype=np.float64)
        s = 32 // m.shape[2]
        diffs = []
        for i in range(len(m)):
            if not region[i].any() or region[i].all():
                continue
            for c in range(m.shape[1]):
                up = np.kron(m[i, c], np.ones((s, s)))      # each mask cell over its s x s pixels
                diffs.append(abs(up[region[i]].mean() - up[~region[i]].mean()))
        assert gaps[name] == pytest.approx(np.mean(diffs))
    with pytest.raises(ValueError, match="region must have shape"):
        mask_region_gap(net, x, region[:, :16])
    with pytest.raises(ValueError, match="empty or full"):
        mask_region_gap(net, x, np.ones_like(region))


def test_curves_and_feature_response_pictures(tmp_path):
    history = [dict(iteration=i, loss=2.0 / i, train_acc=0.1 * i) for i in range(1, 6)]
    history[-1].update(test_acc=0.4, test_loss=0.5)
    assert png_size(plot_training_curves(history, str(tmp_path / "c.png"))) == (900, 340)
    from minirattn.viz import curves_figure
    history[0].update(test_loss=16.0)                                # one early extreme value
    _, (losses, _) = curves_figure(history)
    assert losses.get_yscale() == "log" and losses.get_ylim()[0] < 0.5 < 16 < losses.get_ylim()[1]
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    resp = {r: feature_response(build("attention56", learning=r, **TINY), x, training=True) for r in ("arl", "nal")}
    assert png_size(plot_feature_response(resp, str(tmp_path / "f.png"))) == (450, 340)


def test_masks_and_plot_commands(tmp_path, capsys):
    ck = tmp_path / "run"
    assert main(["train", "--procs", "1", "--iterations", "2", "--eval-every", "2", "--n-train", "32", "--n-test", "8",
                 "--batch-size", "16", "--checkpoint-dir", str(ck), "--no-progress"]) == 0
    assert main(["masks", "--checkpoint", str(ck / "ckpt-00000002.rattn"), "--n", "3",
                 "--out", str(tmp_path / "m.png")]) == 0
    assert png_size(tmp_path / "m.png") == (640, 555)
    assert main(["plot", "--metrics", str(ck / "metrics.json"), "--out", str(tmp_path / "c.png")]) == 0
    assert png_size(tmp_path / "c.png") == (900, 340)
