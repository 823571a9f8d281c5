"""The hidden `relman run-bundled MODULE` sub-command the frozen app starts the GenAI builder
with (it has no interpreter for `python -m`): it runs an allow-listed module as __main__ in a
real child process, and refuses any other module in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from relman.compress.export import genai_export


def test_the_builder_command_is_python_m_from_source_and_the_app_itself_when_frozen(monkeypatch):
    assert genai_export.builder_command() == [sys.executable, "-m", "onnxruntime_genai.models.builder"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert genai_export.builder_command() == [sys.executable, "run-bundled", "onnxruntime_genai.models.builder"]


def test_other_modules_are_refused_in_one_line(run_cli):
    result = run_cli("run-bundled", "os", "-c", "print(1)")
    assert result.exit_code != 0 and "not a tool relman runs" in result.output
    assert "run-bundled" not in run_cli("--help").output  # hidden


@pytest.mark.heavy
@pytest.mark.skipif(not genai_export.genai_installed(), reason="onnxruntime-genai is not installed")
def test_the_builder_runs_through_relman_in_its_own_process(tmp_path):
    """Its own argparse refusal (no -i / -o given), printed from inside the builder module, proves
    it ran as __main__ with the arguments passed on (its --help itself fails in 0.18.0)."""
    proc = subprocess.run([sys.executable, "-m", "relman", "run-bundled", "onnxruntime_genai.models.builder",
                           "-p", "int4"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "usage: builder.py" in proc.stderr and "required: -o/--output" in proc.stderr
