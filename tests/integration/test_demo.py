"""`authproxy demo` as a newcomer runs it: every curl line it prints answers 2xx."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys

import pytest

from authproxy.platforms import REGISTRY
from tests.procs import ROOT

#: seconds the demo may take to end after Ctrl-C: its proxy gives requests under way 10 s
EXIT_WITHIN = 30


def test_every_printed_curl_line_answers_2xx():
    demo = subprocess.Popen(
        [sys.executable, "-m", "authproxy", "demo", "--port", "0"],
        cwd=ROOT,
        preexec_fn=ctrl_c_as_in_a_terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        assert demo.stdout is not None
        for line in demo.stdout:  # the banner ends with "Request log follows"
            if line.startswith("Request log follows"):
                break
            if line.strip().startswith("curl "):
                lines.append(line.strip())
        else:
            pytest.fail(f"demo ended early: {demo.stderr.read() if demo.stderr else ''}")
        assert len(lines) == len(REGISTRY)  # one per platform
        for line in lines:
            command = [*shlex.split(line), "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20"]
            status = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
            assert status.startswith("2"), f"{line} -> {status}"
    finally:
        stopped_in_time(demo)


def ctrl_c_as_in_a_terminal() -> None:
    """SIGINT at its default, as for a command run in a terminal's foreground. A test run
    started in the background by a non-interactive shell inherits SIGINT ignored, and the
    demo (Python) would then ignore Ctrl-C too: that is what failed two CI runs here."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stopped_in_time(demo: subprocess.Popen[str]) -> None:
    """Ctrl-C ends the demo within EXIT_WITHIN seconds; if not, it is killed and the failure
    shows what it logged."""
    demo.send_signal(signal.SIGINT)
    try:
        demo.wait(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        demo.kill()
        _, logged = demo.communicate()
        pytest.fail(f"the demo did not end within {EXIT_WITHIN} s of Ctrl-C; it logged:\n{logged[-4000:]}")
    assert demo.returncode == 0
