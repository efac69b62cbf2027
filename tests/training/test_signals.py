"""Interruption: the first SIGINT/SIGTERM asks for a stop, the second exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from emorec.training.signals import StopRequest
from training_runs import one_thread  # noqa: F401 (a fixture)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_first_signal_only_sets_the_flag_and_handlers_are_restored(signum, capsys):
    before = signal.getsignal(signum)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signum)
        assert stop.requested and stop.signum == signum
    assert signal.getsignal(signum) == before
    assert "stopping after the current step" in capsys.readouterr().err


def test_a_second_signal_exits_at_once():
    code = textwrap.dedent("""
        import os, signal, time
        from emorec.training.signals import StopRequest
        with StopRequest():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        print("not reached")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "not reached" not in proc.stdout
    assert "exiting now without a checkpoint" in proc.stderr


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_ends_with_the_uninterrupted_weights(tmp_path, one_thread):
    import torch

    from emorec.config import load_config
    from emorec.training.trainer import train
    from training_runs import (
        ONE_THREAD_ENV, SAME_RESULT_COLUMNS, checkpoint_weights, make_images, max_abs_diff, metric_rows, tiny_overrides,
    )

    data = make_images(tmp_path / "images", per_class=20)
    settings = ("data.batch_size=4", "optim.accumulation_steps=2", "augment.mix_prob=0.5", "train.ema=true")
    proc = subprocess.Popen([sys.executable, "-m", "emorec", "train", "--set",
                             *tiny_overrides(data, tmp_path, "stopped", *settings)],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **ONE_THREAD_ENV})
    seen = ""
    while "epoch 1/2" not in seen:  # the progress bar appears once training has started
        char = proc.stderr.read(1)
        assert char, f"training ended before it started: {seen[-2000:]}"
        seen += char
    proc.send_signal(signal.SIGTERM)
    err = seen + proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, err[-2000:]
    run = tmp_path / "stopped"
    assert f"emorec train --resume {run}" in err

    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and 0 < ckpt["batch_in_epoch"] < 16, "a mid-epoch checkpoint"
    train(load_config(run / "config.yaml"), resume=run)
    train(load_config(None, tiny_overrides(data, tmp_path, "whole", *settings)))

    assert max_abs_diff(checkpoint_weights(run), checkpoint_weights(tmp_path / "whole")) == 0.0
    for a, b in zip(metric_rows(run), metric_rows(tmp_path / "whole"), strict=True):
        assert {k: a[k] for k in SAME_RESULT_COLUMNS} == {k: b[k] for k in SAME_RESULT_COLUMNS}
