"""The engine's compiled kernels (`kernels.c`), for float32 on the CPU: ghost norms of Linear
layers, and per-example LayerNorm gradients.

Built with the machine's C compiler on first use (well under a second), cached under the user's
cache directory by a hash of the source, the compiler and the CPU's features, and loaded with
ctypes. Where they cannot be had (no compiler, a failed build, `SIMMIM_KERNELS=0`), `load()`
returns None and the engine computes the same numbers with torch, more slowly.
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

SOURCE = Path(__file__).with_name("kernels.c")
SWITCH = "SIMMIM_KERNELS"  # "0" turns the kernels off (for comparisons)
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")

log = logging.getLogger(__name__)


class CompiledKernels:
    """The functions of one compiled library, on float32 CPU tensors (`accepts`)."""

    def __init__(self, library: ctypes.CDLL):
        pointer, integer = ctypes.c_void_p, ctypes.c_int
        self._ghost_norms = library.ghost_norms
        self._ghost_norms.argtypes = [pointer, pointer, pointer, pointer, integer, integer, integer, integer, integer,
                                      ctypes.c_float, integer, integer, pointer]
        self._ghost_norms.restype = None
        self._layer_norm = library.layer_norm_grads
        self._layer_norm.argtypes = [pointer, pointer, pointer, pointer, integer, integer, integer, integer, pointer,
                                     pointer]
        self._layer_norm.restype = None

    @staticmethod
    def accepts(*tensors: torch.Tensor) -> bool:
        return all(t.dtype == torch.float32 and t.device.type == "cpu" and t.dim() == 3 for t in tensors)

    def ghost_norms(self, a: torch.Tensor, b: torch.Tensor, g: torch.Tensor, h: torch.Tensor, bias: float,
                    same: bool) -> torch.Tensor:
        """sum_{t,s} (a_t . b_s + bias)(g_t . h_s) per unit, no Gram matrix stored: a (U, Ta, d_in),
        b (U, Tb, d_in), g (U, Ta, d_out), h (U, Tb, d_out) -> (U,). With `same`, b is a and h is g
        (one call of the layer), and only half of each Gram matrix is formed."""
        a, b, g, h = (t.contiguous() for t in (a, b, g, h))
        units, ta, d_in = a.shape
        tb, d_out = b.shape[1], g.shape[2]
        if b.shape != (units, tb, d_in) or g.shape != (units, ta, d_out) or h.shape != (units, tb, d_out):
            raise ValueError(f"ghost kernel: mismatched shapes {[tuple(t.shape) for t in (a, b, g, h)]}")
        out = torch.empty(units, dtype=torch.float32)
        self._ghost_norms(a.data_ptr(), b.data_ptr(), g.data_ptr(), h.data_ptr(), units, ta, tb, d_in, d_out,
                          float(bias), int(same), torch.get_num_threads(), out.data_ptr())
        return out

    def layer_norm_grads(self, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                         g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example gradients of a LayerNorm's weight and bias, sum_t g_t * x_hat_t and sum_t g_t, in
        one pass: x and g (N, T, d), mean and 1/std (N, T, 1) as autograd keeps them -> two (N, d)."""
        x, mean, rstd, g = (t.contiguous() for t in (x, mean, rstd, g))
        examples, tokens, width = x.shape
        if g.shape != x.shape or mean.shape != (examples, tokens, 1) or rstd.shape != mean.shape:
            raise ValueError(f"layer-norm kernel: mismatched shapes {[tuple(t.shape) for t in (x, mean, rstd, g)]}")
        weight, bias = torch.empty(examples, width), torch.empty(examples, width)
        self._layer_norm(x.data_ptr(), mean.data_ptr(), rstd.data_ptr(), g.data_ptr(), examples, tokens, width,
                         torch.get_num_threads(), weight.data_ptr(), bias.data_ptr())
        return weight, bias


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
def load() -> CompiledKernels | None:
    """The kernels, built if needed; None where they cannot be had (the reason goes to the log)."""
    if os.environ.get(SWITCH) == "0":
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        log.info("no C compiler found: the DP engine computes with torch alone")
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(FLAGS).encode(),
                                     platform.machine().encode(), _cpu_features().encode()])).hexdigest()[:16]
    failures = []
    for directory in _cache_dirs():
        try:
            target = _private_dir(directory) / f"dpsgd-kernels-{key}.so"
            if not target.exists():
                build(compiler, target)
            return CompiledKernels(ctypes.CDLL(str(target)))
        except (OSError, subprocess.SubprocessError) as error:
            failures.append(f"{directory}: {getattr(error, 'stderr', '') or error}")
    log.warning("compiled kernels unavailable (%s): the DP engine computes with torch alone", "; ".join(failures))
    return None
