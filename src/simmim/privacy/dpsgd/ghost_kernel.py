"""The compiled ghost-norm kernel (`ghost_norms.c`), for float32 on the CPU.

Built with the machine's C compiler on first use (well under a second), cached under the user's
cache directory by a hash of the source, the compiler and the CPU's features, and loaded with
ctypes. Where it cannot be had (no compiler, a failed build, `SIMMIM_GHOST_KERNEL=0`), `load()`
returns None and the engine forms the Gram matrices with torch: same numbers, slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("ghost_norms.c")
SWITCH = "SIMMIM_GHOST_KERNEL"  # "0" turns the kernel off (for comparisons)
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")

log = logging.getLogger(__name__)


class GhostNormKernel:
    """sum_{t,s} (a_t . b_s + bias)(g_t . h_s) per unit, from one compiled library (no Gram matrix is stored)."""

    def __init__(self, library: ctypes.CDLL):
        self._fn = library.ghost_norms
        pointer, integer = ctypes.c_void_p, ctypes.c_int
        self._fn.argtypes = [pointer, pointer, pointer, pointer, integer, integer, integer, integer, integer,
                             ctypes.c_float, integer, integer, pointer]
        self._fn.restype = None

    @staticmethod
    def accepts(*tensors: torch.Tensor) -> bool:
        return all(t.dtype == torch.float32 and t.device.type == "cpu" and t.dim() == 3 for t in tensors)

    def __call__(self, a: torch.Tensor, b: torch.Tensor, g: torch.Tensor, h: torch.Tensor, bias: float,
                 same: bool) -> torch.Tensor:
        """a (U, Ta, d_in), b (U, Tb, d_in), g (U, Ta, d_out), h (U, Tb, d_out) -> (U,). With `same`,
        b is a and h is g (one call of the layer), and only half of each Gram matrix is formed."""
        a, b, g, h = (t.contiguous() for t in (a, b, g, h))
        units, ta, d_in = a.shape
        tb, d_out = b.shape[1], g.shape[2]
        if b.shape != (units, tb, d_in) or g.shape != (units, ta, d_out) or h.shape != (units, tb, d_out):
            raise ValueError(f"ghost kernel: mismatched shapes {[tuple(t.shape) for t in (a, b, g, h)]}")
        out = torch.empty(units, dtype=torch.float32)
        self._fn(a.data_ptr(), b.data_ptr(), g.data_ptr(), h.data_ptr(), units, ta, tb, d_in, d_out, float(bias),
                 int(same), torch.get_num_threads(), out.data_ptr())
        return out


def _cpu_features() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def _private_dir(path: Path) -> Path:
    """`path`, created if needed, if this user owns it and nobody else may write there: a library
    is loaded from it, so a directory others can write to would let them run code in this process."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise PermissionError(f"{path} is not private to this user")
    return path


def _cache_dirs() -> list[Path]:
    """Where the built library may live: the user's cache directory, else a private one in /tmp."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [Path(base) / "simmim", Path(tempfile.gettempdir()) / f"simmim-{os.getuid()}"]


def build(compiler: str, target: Path, flags: tuple[str, ...] = FLAGS) -> None:
    """Compiles to a temporary name beside `target`, then renames: a concurrent build or a reader
    never sees a half-written library."""
    fd, partial = tempfile.mkstemp(dir=target.parent, suffix=".so.part")
    os.close(fd)
    try:
        subprocess.run([compiler, *flags, str(SOURCE), "-o", partial], check=True, capture_output=True, text=True,
                       timeout=120)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


@functools.cache
def load() -> GhostNormKernel | None:
    """The kernel, built if needed; None where it cannot be had (the reason goes to the log)."""
    if os.environ.get(SWITCH) == "0":
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        log.info("no C compiler found: ghost norms use torch's batched products")
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(FLAGS).encode(),
                                     platform.machine().encode(), _cpu_features().encode()])).hexdigest()[:16]
    failures = []
    for directory in _cache_dirs():
        try:
            target = _private_dir(directory) / f"ghost_norms-{key}.so"
            if not target.exists():
                build(compiler, target)
            return GhostNormKernel(ctypes.CDLL(str(target)))
        except (OSError, subprocess.SubprocessError) as error:
            failures.append(f"{directory}: {getattr(error, 'stderr', '') or error}")
    log.warning("ghost-norm kernel unavailable (%s): ghost norms use torch's batched products", "; ".join(failures))
    return None
