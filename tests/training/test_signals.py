"""Interruption: the first SIGINT/SIGTERM asks for a stop, the second exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from emorec.training.signals import StopRequest


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
