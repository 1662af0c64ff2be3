"""The memory allocator SimMIM's commands run under: mimalloc where it is installed, else the system's.

Why: the DP engine keeps every Linear layer's input and output gradient until all per-example norms
of the micro-batch are known. Its live bytes stay within a few percent of a non-private step's, but
glibc's heap cannot place the output gradients, which arrive during the backward pass, in the holes
the freed activations leave, and the DP step's peak RSS grows to 1.28-1.44x the non-private one's.
mimalloc, which keeps blocks of one size class together, holds the same steps to 1.12-1.20x, and
non-private training slightly below glibc's peak too (docs/benchmarks.md, "mimalloc by default").

A process cannot change its malloc once it runs, so the `simmim` command (`launch`) re-executes
itself once with mimalloc preloaded before anything else is imported, as PyTorch's CPU launcher
does with jemalloc. `SIMMIM_ALLOCATOR=system` keeps the system's malloc.

mimalloc gives freed memory back to the system after `MIMALLOC_PURGE_DELAY` ms without reuse.
Its default (10 ms) returns memory inside a training step that the next layers need again: DP and
non-private steps alike ran 16-20% slower than under glibc here, and 9% slower at 1000 ms. SimMIM
sets -1 (freed memory stays for reuse, as glibc's heap keeps most of its own): steps then ran as
fast as under glibc, at the lower peak. A value set in the environment is kept.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

CHOICE = "SIMMIM_ALLOCATOR"  # "mimalloc" (the default) or "system"
_ATTEMPTED = "SIMMIM_ALLOCATOR_PRELOADED"  # set in the re-executed process: never exec twice
PURGE_DELAY_MS = "-1"


def mimalloc_library() -> Path | None:
    """The shared library of the installed `cmeel-mimalloc` distribution, or None (not installed, or not
    a platform where it can be preloaded)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        files = metadata.distribution("cmeel-mimalloc").files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "libmimalloc.so":
            path = Path(file.locate())
            return path if path.is_file() else None
    return None


def active() -> str:
    """"mimalloc" when this process's malloc is mimalloc, else "system"."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "mimalloc" if "libmimalloc" in maps else "system"


def reexec_under_mimalloc() -> None:
    """Replaces this process by the same command with mimalloc preloaded, unless it already runs under
    it, the user chose the system's malloc, mimalloc is not installed (or lies at a path the loader
    cannot preload), or this process is itself such a re-execution (a library the loader refused
    to preload must not cause a loop)."""
    if os.environ.get(CHOICE, "mimalloc") == "system" or os.environ.get(_ATTEMPTED) or active() == "mimalloc":
        return
    library = mimalloc_library()
    if library is None or any(c in str(library) for c in " \t\n:"):
        return  # the loader splits LD_PRELOAD at spaces and colons: such a path cannot be preloaded
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [str(library), env.get("LD_PRELOAD")]))
    env.setdefault("MIMALLOC_PURGE_DELAY", PURGE_DELAY_MS)
    env[_ATTEMPTED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def launch() -> None:
    """The `simmim` command: under mimalloc where it can be, then the CLI."""
    reexec_under_mimalloc()
    from simmim.cli import main

    main()
