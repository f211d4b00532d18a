"""The `minirattn` command."""
import argparse
import subprocess
import sys

from minirattn.cli import main


def test_models_lists_the_registry_with_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "attention92" in out and "1,959,706" in out and "1,148,826" in out and "attention92_imagenet" in out


def test_train_then_evaluate(tmp_path, capsys):
    ck = tmp_path / "run"
    assert main(["train", "--procs", "1", "--iterations", "2", "--eval-every", "2", "--n-train", "64", "--n-test", "32",
                 "--batch-size", "16", "--checkpoint-dir", str(ck), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "attention56_small on shapes: 2 iterations" in out and "metrics:" in out
    assert main(["evaluate", "--checkpoint", str(ck / "ckpt-00000002.rattn")]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_bad_options_exit_with_a_message(capsys):
    assert main(["train", "--batch-size", "0", "--no-progress"]) == 2
    assert "batch_size: expected an int >= 1, got 0" in capsys.readouterr().err


def test_python_dash_m_and_check():
    out = subprocess.run([sys.executable, "-m", "minirattn", "check"], capture_output=True, text=True)
    assert out.returncode == 0 and "all gradients agree with finite differences" in out.stdout


def test_a_new_run_never_overwrites_an_earlier_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--procs", "1", "--iterations", "2", "--eval-every", "2", "--n-train", "32", "--n-test", "16",
            "--batch-size", "16", "--no-progress"]
    assert main(args) == 0 and main(args) == 0
    assert (tmp_path / "runs" / "shapes-attention56_small" / "ckpt-00000002.rattn").exists()
    assert (tmp_path / "runs" / "shapes-attention56_small-2" / "ckpt-00000002.rattn").exists()
    assert main(args + ["--checkpoint-dir", "runs/shapes-attention56_small"]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0                       # picks the newest run, -2
    assert "runs/shapes-attention56_small-2" in capsys.readouterr().out


def test_every_option_has_help_and_shows_its_default():
    from minirattn.cli import build_parser
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"train", "evaluate", "masks", "predict", "export", "plot", "models",
                             "check", "reproduce"}
    for name, sub in commands.items():
        assert issubclass(sub.formatter_class, argparse.ArgumentDefaultsHelpFormatter), name
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help"
        text = " ".join(sub.format_help().split())          # the help wraps lines
        if name == "train":
            assert "(default: 800)" in text and "(default: attention56_small)" in text
            # a default only where there is one: none for flags or computed ones, never twice
            assert "(default: None)" not in text and "(default: False)" not in text
            assert "(default 224) (default" not in text
    assert "ckpt-00000800.rattn" in parser.epilog            # what the default run writes
