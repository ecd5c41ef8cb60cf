"""Shared set-up of the CLI tests: one thread, and a helper that runs ``mlattack`` in this process."""

import pytest

from mlattack.cli import main
from tests.threads import single_thread_fixture

single_thread = single_thread_fixture("package")


@pytest.fixture
def mlattack(capsys, monkeypatch):
    """``mlattack(*argv)`` -> (exit code, stdout, stderr), run in this process (imports are paid once)."""
    monkeypatch.delenv("MLATTACK_DEBUG", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run
