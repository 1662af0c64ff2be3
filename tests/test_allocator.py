"""The `simmim` command re-executes itself once under mimalloc (`simmim.allocator`), each test in its own
process: a process's malloc is fixed when it starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simmim import allocator

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is the Linux loader's")

PROBE = ("import os, sys; from simmim import allocator; allocator.reexec_under_mimalloc(); "
         "print(allocator.active(), os.environ.get('MIMALLOC_PURGE_DELAY'), sys.argv[1:])")


def run(code_or_args: list[str], **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("LD_PRELOAD", allocator.CHOICE, "MIMALLOC_PURGE_DELAY", "SIMMIM_ALLOCATOR_PRELOADED")}
    return subprocess.run(code_or_args, capture_output=True, text=True, env={**environment, **env}, timeout=120)


@linux_only
def test_the_installed_library_is_found():
    library = allocator.mimalloc_library()
    assert library is not None and library.name == "libmimalloc.so" and library.is_file()


@linux_only
def test_reexecutes_once_under_mimalloc_with_the_same_arguments():
    result = run([sys.executable, "-c", PROBE, "two words", "--flag"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == [f"mimalloc {allocator.PURGE_DELAY_MS} ['two words', '--flag']"]


@linux_only
def test_a_purge_delay_set_by_the_user_is_kept():
    result = run([sys.executable, "-c", PROBE], MIMALLOC_PURGE_DELAY="250")
    assert result.stdout.strip() == "mimalloc 250 []", result.stderr


def test_system_choice_keeps_the_system_malloc():
    result = run([sys.executable, "-c", PROBE], SIMMIM_ALLOCATOR="system")
    assert result.stdout.strip() == "system None []", result.stderr


@linux_only
def test_a_reexecuted_process_never_reexecutes_again():
    # Where the loader refused the preload, trying again would loop.
    result = run([sys.executable, "-c", PROBE], SIMMIM_ALLOCATOR_PRELOADED="1")
    assert result.stdout.strip() == "system None []", result.stderr


def test_a_path_the_loader_would_split_is_not_preloaded(monkeypatch, tmp_path):
    monkeypatch.delenv(allocator.CHOICE, raising=False)
    monkeypatch.delenv("SIMMIM_ALLOCATOR_PRELOADED", raising=False)
    monkeypatch.setattr(allocator, "active", lambda: "system")
    monkeypatch.setattr(allocator, "mimalloc_library", lambda: tmp_path / "my libs" / "libmimalloc.so")

    def execve(*args):
        raise AssertionError(f"re-executed with {args}")

    monkeypatch.setattr(allocator.os, "execve", execve)
    allocator.reexec_under_mimalloc()  # returns: this process keeps its malloc


@linux_only
def test_the_simmim_command_runs_under_mimalloc(tmp_path):
    """The installed console script itself: mimalloc announces itself with its purge delay (verbose, on
    stderr), the command's output is unchanged, and a run report names the malloc."""
    script = Path(sys.executable).with_name("simmim")
    result = run([str(script), "privacy", "epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1.1",
                  "--steps", "100", "--delta", "1e-5", "--json"], MIMALLOC_VERBOSE="1")
    assert result.returncode == 0, result.stderr
    assert "mimalloc: process init" in result.stderr
    assert f"option 'purge_delay': {allocator.PURGE_DELAY_MS}" in result.stderr
    assert json.loads(result.stdout)["epsilon"] > 0
    code = ("from pathlib import Path; import json; from simmim import allocator; allocator.reexec_under_mimalloc(); "
            "from simmim.report import write_report; "
            f"write_report(Path({str(tmp_path)!r}), title='t', metrics={{}}, samples={{}}, history=[], timing={{}}, "
            "privacy=None)")
    written = run([sys.executable, "-c", code])
    assert written.returncode == 0, written.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["timing"]["malloc"] == "mimalloc"
