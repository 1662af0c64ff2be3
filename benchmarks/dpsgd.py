"""DP-SGD step cost: our per-example clipping engine against non-private training and Opacus.

    python benchmarks/dpsgd.py [--models demo vit] [--batch-sizes 64 256] [--threads 1 2] [--reps 7]
                               [--mem-steps 3] [--no-memory] [--json] [--json-out FILE]

One step, for every variant, is: forward, backward and, for the private variants, every example's
gradient clipped to norm C and summed into `p.grad`, at sigma = 0 (no noise) and with no optimiser
update, so that the variants differ only in how they clip:

  nonprivate     loss.mean().backward()
  ours           simmim.privacy.dpsgd.PerExampleClipper: zero_grad(); accumulate_clipped(losses)
  opacus_hooks   Opacus GradSampleModule (per-sample gradients materialised) + DPOptimizer.pre_step()
  opacus_ghost   Opacus ghost clipping (GradSampleModuleFastGradientClipping: norms from activations
                 and output gradients, then a second backward pass of the reweighted loss)

Models:

  demo  the demo SimMIM model (`create_model("demo")`) on real synthetic batches (fitted tokenizer,
        SimMIM patch mask), with SimMIMObjective's per-example losses at contrastive weight 0: the
        in-batch contrastive loss couples the examples, and clipping a coupled loss per example is
        not DP. Two objectives:
          full    masked patch + text->image generation + caption. The image encoder runs twice
                  (unmasked and masked view), which Opacus ghost clipping refuses ("Parameter tying
                  is not supported with Ghost Clipping"): opacus_ghost is not run on it.
          single  generation + caption only: the image encoder runs once, so all four variants run.
  vit   a ViT classifier of ~0.81M parameters built from simmim.models.layers (4-px patches, width
        128, 6 blocks, 4 heads), per-example cross-entropy on 32x32 synthetic scenes labelled with the
        shape of their first object.

Time: one process per (model, batch, threads) builds every variant, each on its own copy of the
model (same initialisation, same batch), and steps them round-robin: 2 warm-up rounds, then --reps
timed rounds. The median wall time per step is reported, and ratios are taken between variants of
the same process, which saw the same machine load. The headline ratio to non-private also comes
round by round (median and quartiles of each round's ours / non-private): on a shared machine
whose speed drifts by tens of percent, that spread is the honest error bar of the ratio.

Allocator: the run re-executes itself under the allocator `simmim` trains under (`simmim.allocator`:
mimalloc where installed), and its measurement processes inherit it; `SIMMIM_ALLOCATOR=system`
measures under glibc's malloc instead. The allocator is printed and recorded in the JSON: the peak
RSS, above all the DP step's, depends on it.

Memory: each variant in its own process (peak RSS only ever grows within a process). The peak
RSS over 2 + --mem-steps steps, minus the RSS just before the first step, is the step's peak
memory increase: activations, gradients, per-sample state, and what the allocator keeps between
steps; the model, the batch and the Opacus/engine setup are excluded. (The peak creeps up over
the first steps as the heap fragments, hence several steps.) Under glibc, the same process samples
the bytes glibc's malloc has handed out and not yet had back (`mallinfo2`: in use in the heap
plus mmapped chunks) from a thread, every 0.2 ms or so: the peak of the tensors and objects alive,
without the freed memory the heap keeps. Peak RSS minus that is heap fragmentation. A sampled
peak can only read low (a peak between two samples is missed), never high.

Correctness first: before timing, for each model (and demo objective), ours and every Opacus
variant must give the same clipped gradient sum at sigma = 0, on a batch of 16 with C set to the
median per-example gradient norm (half the examples clipped, half not, so both branches of
min(1, C / norm) are compared). The maximum absolute difference is printed; the run stops if it is
above 1e-4 of the largest gradient entry, as a benchmark of a wrong gradient is worthless.

Workarounds for Opacus 1.6, each needed for it to run at all, none adding work to it:
  * grad samplers for our leaf modules (ClassToken, MaskToken, PositionEmbedding) in Opacus's own
    hooks form, vectorised: its functorch fallback cannot call MaskToken with its mask. The best
    case for Opacus.
  * the demo generator's LearnedQueries takes an int (the batch size), which Opacus's activation
    hook tries to `.detach()`: its 16x64 weight is frozen, in every variant alike.
  * Opacus's optimiser needs a per-sample gradient for every trainable parameter: parameters the
    objective never reaches (video, contrastive head; patch head and mask token under `single`) are
    frozen, in every variant alike, so all variants train the same parameters.
  * Opacus's embedding norm sampler (ghost) calls `.view` on the token ids, which fails on the
    objective's sliced, non-contiguous caption: it is handed contiguous ids.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from simmim.allocator import active as allocator_in_use
from simmim.allocator import reexec_under_mimalloc

MODELS = ("demo", "vit")
OBJECTIVES = {"demo": ("full", "single"), "vit": ("xent",)}
VARIANTS = ("nonprivate", "ours", "opacus_hooks", "opacus_ghost")
OPACUS = ("opacus_hooks", "opacus_ghost")
NOT_RUN = {
    ("demo", "full", "opacus_ghost"): "Opacus ghost clipping refuses a module called twice in one forward pass "
    "(the image encoder sees the unmasked and the masked view): see demo/single for it",
}
CLIP = 1.0  # C for the timed steps; its value does not change the work done
WARMUP = 2  # steps (rounds) before timing: allocator, kernels, Opacus's lazily built state
CHECK_BATCH = 16
CHECK_TOLERANCE = 1e-4  # relative to the largest gradient entry; float32 reordering gives ~1e-7
VOCAB_RECORDS = 512  # the tokenizer is fitted on these, so the demo model is the same at every batch size


# Workloads: a model and a function giving its per-example losses on one fixed batch.


@dataclass
class Workload:
    model: nn.Module
    batch: dict[str, torch.Tensor]  # every tensor indexed by example first
    loss_of: Callable[[dict[str, torch.Tensor]], torch.Tensor]  # forward included; (N,) per-example losses

    @property
    def batch_size(self) -> int:
        return len(next(iter(self.batch.values())))

    def losses(self) -> torch.Tensor:
        return self.loss_of(self.batch)


class ViTClassifier(nn.Module):
    """A small ViT classifier from the blocks the DP engine supports: Linear patch embedding, class
    token, learned positions, pre-norm blocks, final LayerNorm on the class token, Linear head."""

    def __init__(self, image_size: int = 32, patch_size: int = 4, width: int = 128, depth: int = 6,
                 heads: int = 4, mlp_ratio: float = 2.0, classes: int = 4):
        from simmim.models.layers import Block, ClassToken, PositionEmbedding

        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = nn.Linear(3 * patch_size**2, width)
        self.class_token = ClassToken(width)
        self.position = PositionEmbedding((image_size // patch_size) ** 2 + 1, width)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from simmim.models.layers import patchify

        x = self.patch_embed(patchify(images * 2.0 - 1.0, self.patch_size))
        x = self.position(self.class_token(x))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x[:, 0]))


@cache
def _demo_data(n: int) -> tuple[dict[str, torch.Tensor], int, int]:
    """A real training batch of n synthetic records: (batch, vocabulary size, pad id)."""
    from simmim.config import TrainConfig
    from simmim.data import synthetic
    from simmim.data.batches import EncodedSet, step_generator
    from simmim.data.tokenizer import WordTokenizer
    from simmim.models import model_config

    tokenizer = WordTokenizer.fit(c for r in synthetic.generate(VOCAB_RECORDS, seed=0) for c in r.captions)
    cfg = model_config("demo")
    data = EncodedSet(synthetic.generate(n, seed=0), tokenizer, cfg.context_length)
    batch = data.batch(torch.arange(n), step_generator(0, 0), num_patches=cfg.num_patches,
                       mask_ratio=TrainConfig().mask_ratio)
    return batch, tokenizer.vocab_size, tokenizer.pad_id


@cache
def _vit_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n synthetic 32x32 scenes in [0, 1] and their label: the first object's shape."""
    from simmim.data import synthetic
    from simmim.data.records import SHAPES

    records = synthetic.generate(n, seed=0)
    images = torch.stack([torch.from_numpy(r.image) for r in records]).float().div_(255.0).movedim(-1, 1)
    labels = torch.tensor([SHAPES.index(r.scene.objects[0].shape) for r in records])
    return images.contiguous(), labels


def build_workload(model_name: str, objective: str, n: int) -> Workload:
    """A fresh model (same initialisation every call) with its loss on the fixed batch of size n,
    its never-reached parameters frozen (see the module docstring)."""
    torch.manual_seed(0)
    if model_name == "demo":
        from simmim.losses import LossWeights, SimMIMObjective
        from simmim.models import create_model

        batch, vocab_size, pad_id = _demo_data(n)
        model = create_model("demo", vocab_size=vocab_size)
        weights = LossWeights(contrastive=0.0, masked_patch=1.0 if objective == "full" else 0.0)
        loss_fn = SimMIMObjective(weights, pad_id=pad_id)

        def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return loss_fn.weighted(loss_fn.per_example(model, batch))
    else:
        images, labels = _vit_data(n)
        batch = {"images": images, "labels": labels}
        model = ViTClassifier()

        def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return F.cross_entropy(model(batch["images"]), batch["labels"], reduction="none")

    workload = Workload(model, batch, loss_of)
    _freeze_for_opacus(workload)
    return workload


def _freeze_for_opacus(workload: Workload) -> None:
    """Freezes, in every variant alike, what Opacus cannot handle: LearnedQueries (an int input its
    activation hook cannot detach) and the parameters the objective never reaches (its optimiser
    expects a per-sample gradient for each trainable one), found by one probe backward on two
    examples (small, so that it leaves no freed-but-kept memory behind in the RSS)."""
    from simmim.models.layers import LearnedQueries

    for module in workload.model.modules():
        if isinstance(module, LearnedQueries):
            module.weight.requires_grad_(False)
    workload.loss_of({key: value[:2] for key, value in workload.batch.items()}).sum().backward()
    for param in workload.model.parameters():
        if param.grad is None:
            param.requires_grad_(False)
        param.grad = None


# Variants: each returns a step function; ours returns the per-example norms (used by the check).


def _register_opacus_samplers() -> None:
    """Opacus per-sample gradients for our leaf modules, vectorised in its hooks form; idempotent."""
    from opacus.grad_sample import GradSampleModuleFastGradientClipping, register_grad_sampler

    from simmim.models.layers import ClassToken, MaskToken, PositionEmbedding

    @register_grad_sampler(MaskToken)
    def _mask_token(layer: MaskToken, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict:
        # where(mask, w, x): w receives the output gradient at every masked position.
        return {layer.weight: (backprops * activations[1][..., None]).sum(1)}

    @register_grad_sampler(ClassToken)
    def _class_token(layer: ClassToken, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict:
        return {layer.weight: backprops[:, 0]}

    @register_grad_sampler(PositionEmbedding)
    def _position(layer: PositionEmbedding, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict:
        # x + w[:L]: rows past the sequence length get zero.
        out = backprops.new_zeros((len(backprops), *layer.weight.shape))
        out[:, : backprops.shape[1]] = backprops
        return {layer.weight: out}

    # Opacus 1.6's embedding norm sampler calls .view on the ids, which fails on the caption slice
    # batch["caption"][:, :-1] (not contiguous): wrap it once to hand it contiguous ids.
    samplers = GradSampleModuleFastGradientClipping.NORM_SAMPLERS
    original = samplers[nn.Embedding]
    if not getattr(original, "contiguous_ids", False):
        def contiguous_ids(layer: nn.Embedding, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict:
            return original(layer, [a.contiguous() for a in activations], backprops)

        contiguous_ids.contiguous_ids = True
        samplers[nn.Embedding] = contiguous_ids


def _quiet_opacus() -> None:
    # Torch warns, at each backward, that a full backward hook (Opacus's) fires on a module whose
    # input needs no gradient (the first layer, fed the images or token ids): expected and harmless.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")


def make_step(variant: str, workload: Workload, clip: float) -> Callable[[], torch.Tensor | None]:
    model = workload.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    if variant == "nonprivate":
        def step() -> None:
            model.zero_grad(set_to_none=True)
            workload.losses().mean().backward()
        return step

    if variant == "ours":
        from simmim.privacy.dpsgd import PerExampleClipper

        engine = PerExampleClipper(model, max_grad_norm=clip)

        def step_ours() -> torch.Tensor:
            engine.zero_grad()
            return engine.accumulate_clipped(loss_per_example=workload.losses(), units=None)
        return step_ours

    _quiet_opacus()
    _register_opacus_samplers()
    if variant == "opacus_hooks":
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        # The wrapper's hooks sit on the model's own modules (and keep the wrapper alive): calling
        # `model`, as the objective does, runs them.
        GradSampleModule(model, batch_first=True, loss_reduction="sum")
        optimizer = DPOptimizer(torch.optim.SGD(trainable, lr=0.0), noise_multiplier=0.0, max_grad_norm=clip,
                                expected_batch_size=workload.batch_size, loss_reduction="sum")

        def step_hooks() -> None:
            optimizer.zero_grad(set_to_none=True)
            workload.losses().sum().backward()
            optimizer.pre_step()  # clip per sample, sum into p.grad, add (zero) noise
        return step_hooks

    if variant == "opacus_ghost":
        from opacus.grad_sample import GradSampleModuleFastGradientClipping
        from opacus.optimizers import DPOptimizerFastGradientClipping
        from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

        ghost = GradSampleModuleFastGradientClipping(model, batch_first=True, loss_reduction="sum",
                                                     max_grad_norm=clip, use_ghost_clipping=True)
        ghost_optimizer = DPOptimizerFastGradientClipping(
            torch.optim.SGD(trainable, lr=0.0), noise_multiplier=0.0, max_grad_norm=clip,
            expected_batch_size=workload.batch_size, loss_reduction="sum")

        def step_ghost() -> None:
            ghost_optimizer.zero_grad(set_to_none=True)
            # Its backward: norms pass, then the backward of the clipping-weighted loss sum.
            DPTensorFastGradientClipping(ghost, ghost_optimizer, workload.losses(), "sum").backward()
            ghost_optimizer.pre_step()
        return step_ghost

    raise ValueError(f"unknown variant {variant!r}")


def variants_of(model_name: str, objective: str) -> list[str]:
    return [v for v in VARIANTS if (model_name, objective, v) not in NOT_RUN]


# Measurements.


def check_gradients(model_name: str) -> list[dict]:
    """Ours against each Opacus variant: the same clipped gradient sum at sigma = 0?"""
    results = []
    for objective in OBJECTIVES[model_name]:
        probe = build_workload(model_name, objective, CHECK_BATCH)
        norms = make_step("ours", probe, CLIP)()
        # The median norm as C: half the examples are clipped, half are not.
        clip = float(torch.quantile(norms.double(), 0.5))
        grads: dict[str, dict[str, torch.Tensor]] = {}
        for variant in variants_of(model_name, objective):
            if variant == "nonprivate":
                continue
            workload = build_workload(model_name, objective, CHECK_BATCH)
            make_step(variant, workload, clip)()
            grads[variant] = {name: p.grad.detach().clone() for name, p in workload.model.named_parameters()
                              if p.requires_grad}
        reference = grads["ours"]
        scale = max(float(g.abs().max()) for g in reference.values())
        for variant in (v for v in grads if v != "ours"):
            if grads[variant].keys() != reference.keys():
                raise SystemExit(f"{model_name}/{objective}: {variant} trains other parameters than ours")
            diff = max(float((reference[k] - grads[variant][k]).abs().max()) for k in reference)
            results.append({"model": model_name, "objective": objective, "against": variant,
                            "parameters": sum(g.numel() for g in reference.values()), "tensors": len(reference),
                            "batch": CHECK_BATCH, "clip": clip, "clipped": int((norms > clip).sum()),
                            "max_abs_diff": diff, "max_abs_grad": scale, "ok": diff <= CHECK_TOLERANCE * scale})
    return results


def time_variants(model_name: str, batch_size: int, threads: int, reps: int) -> list[dict]:
    """Every variant of one model in this process, stepped round-robin."""
    torch.set_num_threads(threads)
    entries = [(objective, variant) for objective in OBJECTIVES[model_name]
               for variant in variants_of(model_name, objective)]
    steps = {(objective, variant): make_step(variant, build_workload(model_name, objective, batch_size), CLIP)
             for objective, variant in entries}
    times: dict[tuple[str, str], list[float]] = {entry: [] for entry in entries}
    cpu: dict[tuple[str, str], list[float]] = {entry: [] for entry in entries}
    for round_index in range(WARMUP + reps):
        # Each round starts one variant later, so that no variant always follows the same one
        # (which would hand it the same allocator and cache state every time).
        shift = round_index % len(entries)
        for entry in entries[shift:] + entries[:shift]:
            start, start_cpu = time.perf_counter(), time.process_time()
            steps[entry]()
            if round_index >= WARMUP:
                times[entry].append(time.perf_counter() - start)
                cpu[entry].append(time.process_time() - start_cpu)
    # The load average includes this process's own threads: well above `threads` means the
    # machine was shared, and wall times (2 threads above all) are not to be trusted.
    load = os.getloadavg()[0]
    rows = []
    for (objective, variant), values in times.items():
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        rows.append({"model": model_name, "objective": objective, "variant": variant, "batch": batch_size,
                     "threads": threads, "reps": reps, "step_ms": 1000 * statistics.median(values),
                     "step_ms_min": 1000 * min(values), "step_ms_iqr": [1000 * quartiles[0], 1000 * quartiles[2]],
                     "cpu_ms": 1000 * statistics.median(cpu[(objective, variant)]), "loadavg_1min_after": load,
                     "step_ms_each_round": [1000 * v for v in values]})
    return rows


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


class LiveHeapPeak:
    """The peak of glibc malloc's bytes in use (heap chunks in use plus mmapped chunks), sampled from a
    thread while the `with` block runs; `peak_mib` is None where glibc's malloc is not the one in use
    (another allocator preloaded) or has no mallinfo2 (glibc < 2.33).

    Torch's operators release the GIL, so the sampler runs during them; Python code between them can
    hold it for up to the switch interval (5 ms), so a peak shorter than that may be missed."""

    def __init__(self, interval_s: float = 0.0002):
        self.interval_s = interval_s
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._mallinfo2 = None
        try:
            libc = ctypes.CDLL("libc.so.6")
            in_use = ctypes.CDLL(None)  # the malloc the process calls: glibc's, or a preloaded one
            if ctypes.cast(in_use.malloc, ctypes.c_void_p).value == ctypes.cast(libc.malloc, ctypes.c_void_p).value:
                self._mallinfo2 = libc.mallinfo2
                self._mallinfo2.restype = _MallInfo2
        except (OSError, AttributeError):
            pass

    def in_use_mib(self) -> float | None:
        if self._mallinfo2 is None:
            return None
        info = self._mallinfo2()
        return (info.uordblks + info.hblkhd) / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self.in_use_mib())
            time.sleep(self.interval_s)

    def __enter__(self) -> LiveHeapPeak:
        self.peak_mib = self.in_use_mib()
        if self.peak_mib is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.peak_mib is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mib = max(self.peak_mib, self.in_use_mib())


def peak_memory(model_name: str, objective: str, variant: str, batch_size: int, threads: int, steps: int) -> dict:
    """Peak RSS increase of one variant's steps, alone in this process: the peak over WARMUP + steps
    steps minus the RSS before the first (model, batch and Opacus/engine state already built).

    Not the peak after a warm-up minus the RSS then: the allocator keeps the memory a step freed, so
    after one step the RSS already holds the step's peak and the increase would read ~0. The live
    peak (`LiveHeapPeak`) over the same steps, minus the bytes in use before the first, comes with it."""
    torch.set_num_threads(threads)
    step = make_step(variant, build_workload(model_name, objective, batch_size), CLIP)
    # "5" resets the peak (VmHWM) to the current RSS: one-off peaks of the setup (data generation,
    # imports) drop out.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mib("VmRSS:")
    after_each = []
    with LiveHeapPeak() as live:
        live_before = live.in_use_mib()
        for _ in range(WARMUP + steps):
            step()
            after_each.append(_status_mib("VmHWM:") - before)
    return {"rss_before_mib": before, "peak_rss_increase_mib": after_each[-1],
            "peak_rss_increase_after_each_step_mib": after_each,
            "peak_live_increase_mib": None if live.peak_mib is None else live.peak_mib - live_before}


# Driver.


def _child(arguments: list[str]) -> object:
    """Runs this script on one measurement in a fresh process; its last stdout line is JSON."""
    out = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"measurement {' '.join(arguments)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _paired_ratio(times: list[float], base_times: list[float]) -> dict:
    """The ratio of two variants' steps round by round (the two steps of a round are seconds apart, so
    a machine whose speed drifts over the run moves both): its median and quartiles."""
    ratios = [t / b for t, b in zip(times, base_times)]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {"median": statistics.median(ratios), "iqr": [quartiles[0], quartiles[2]]}


def _headline(rows: list[dict], batch_sizes: list[int], threads: list[int]) -> dict:
    """The issue's numbers for the demo model at batch 256 (or the largest measured), 2 threads if measured."""
    batch = 256 if 256 in batch_sizes else max(batch_sizes)
    thread_count = 2 if 2 in threads else min(threads)
    found = {(r["objective"], r["variant"]): r for r in rows
             if r["model"] == "demo" and r["batch"] == batch and r["threads"] == thread_count}
    if not found:
        return {"ratio_vs_nonprivate": None, "ratio_vs_nonprivate_by_round": None, "ratio_vs_opacus_best": None,
                "peak_mem_ratio": None, "peak_live_ratio": None}

    def value(objective: str, variant: str, key: str) -> float | None:
        row = found.get((objective, variant))
        return None if row is None else row.get(key)

    by_objective = {}
    for objective in OBJECTIVES["demo"]:
        opacus = {v: value(objective, v, "step_ms") for v in OPACUS if (objective, v) in found}
        best = min(opacus, key=opacus.get) if opacus else None
        by_objective[objective] = {
            "ratio_vs_nonprivate": _ratio(value(objective, "ours", "step_ms"),
                                          value(objective, "nonprivate", "step_ms")),
            "ratio_vs_nonprivate_by_round": value(objective, "ours", "step_ratio_vs_nonprivate_by_round"),
            "opacus_best": best,
            "ratio_vs_opacus_best": _ratio(value(objective, "ours", "step_ms"), opacus.get(best)),
            "peak_mem_ratio": _ratio(value(objective, "ours", "peak_rss_increase_mib"),
                                     value(objective, "nonprivate", "peak_rss_increase_mib")),
            "peak_mem_ratio_vs_opacus_best": _ratio(value(objective, "ours", "peak_rss_increase_mib"),
                                                    value(objective, best, "peak_rss_increase_mib")),
            "peak_live_ratio": _ratio(value(objective, "ours", "peak_live_increase_mib"),
                                      value(objective, "nonprivate", "peak_live_increase_mib")),
        }
    return {
        "ratio_vs_nonprivate": by_objective["full"]["ratio_vs_nonprivate"],
        "ratio_vs_nonprivate_by_round": by_objective["full"]["ratio_vs_nonprivate_by_round"],
        "ratio_vs_opacus_best": by_objective["single"]["ratio_vs_opacus_best"],
        "peak_mem_ratio": by_objective["full"]["peak_mem_ratio"],
        "peak_live_ratio": by_objective["full"]["peak_live_ratio"],
        "headline_basis": {
            "model": "demo", "batch": batch, "threads": thread_count,
            "ratio_vs_nonprivate": "ours / nonprivate step time, full objective",
            "ratio_vs_nonprivate_by_round": "ours / nonprivate step time of each round, full objective: median and "
                                            "quartiles (the spread the machine's own noise gives)",
            "ratio_vs_opacus_best": "ours / min(opacus_hooks, opacus_ghost) step time, single objective (the only "
                                    "one Opacus ghost runs on); by_objective.full has ours / opacus_hooks",
            "peak_mem_ratio": "ours / nonprivate peak-RSS increase of a step, full objective",
            "peak_live_ratio": "ours / nonprivate peak increase of malloc's bytes in use (sampled), full objective: "
                               "peak_mem_ratio without heap fragmentation",
        },
        "by_objective": by_objective,
    }


def _print_table(rows: list[dict]) -> None:
    header = ("model", "objective", "batch", "threads", "variant", "step ms", "x nonpriv", "peak +MiB", "x nonpriv",
              "live +MiB", "x nonpriv")
    print("{:5s} {:9s} {:>5s} {:>7s} {:13s} {:>8s} {:>9s} {:>9s} {:>9s} {:>9s} {:>9s}".format(*header))

    def fmt(value: float | None, spec: str, suffix: str = "") -> str:
        return "-" if value is None else format(value, spec) + suffix

    for r in rows:
        print(f"{r['model']:5s} {r['objective']:9s} {r['batch']:5d} {r['threads']:7d} {r['variant']:13s} "
              f"{r['step_ms']:8.1f} {fmt(r['step_ratio_vs_nonprivate'], '.2f', 'x'):>9s} "
              f"{fmt(r.get('peak_rss_increase_mib'), '.0f'):>9s} "
              f"{fmt(r.get('mem_ratio_vs_nonprivate'), '.2f', 'x'):>9s} "
              f"{fmt(r.get('peak_live_increase_mib'), '.0f'):>9s} "
              f"{fmt(r.get('live_ratio_vs_nonprivate'), '.2f', 'x'):>9s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--reps", type=int, default=7, help="timed rounds per process (after 2 warm-up rounds)")
    parser.add_argument("--mem-steps", type=int, default=3,
                        help="steps after the 2 warm-up ones over which the peak RSS is taken")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-RSS processes")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--json-out", metavar="FILE", help="also write that JSON object to FILE (table and JSON "
                        "from one run)")
    parser.add_argument("--time-one", nargs=3, metavar=("MODEL", "BATCH", "THREADS"), help=argparse.SUPPRESS)
    parser.add_argument("--mem-one", nargs=5, metavar=("MODEL", "OBJECTIVE", "VARIANT", "BATCH", "THREADS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Under the allocator `simmim` trains under (mimalloc, or SIMMIM_ALLOCATOR=system for glibc's): the
    # measurement processes inherit it.
    reexec_under_mimalloc()
    if args.time_one:
        model_name, batch, threads = args.time_one
        print(json.dumps(time_variants(model_name, int(batch), int(threads), args.reps)))
        return
    if args.mem_one:
        model_name, objective, variant, batch, threads = args.mem_one
        print(json.dumps(peak_memory(model_name, objective, variant, int(batch), int(threads), args.mem_steps)))
        return

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    # The check runs here: as few threads as the measurements use, not torch's default (all cores).
    torch.set_num_threads(min(args.threads))

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    progress(f"allocator: {allocator_in_use()} malloc")
    if load_before > 0.5:
        # The 1-minute average also remembers work that just ended: a warning, not a refusal.
        progress(f"warning: load average {load_before:.2f} before starting: if other work is still running, "
                 "timings (2 threads above all) will suffer from it (each row records the load after it)")
    checks: list[dict] = []
    rows: list[dict] = []
    for model_name in args.models:
        progress(f"checking {model_name}: ours vs Opacus clipped gradients at sigma = 0")
        model_checks = check_gradients(model_name)
        checks += model_checks
        for c in model_checks:
            # With --json, stdout carries only the JSON object: the check goes to stderr.
            print(f"check {c['model']}/{c['objective']}: ours vs {c['against']}: {c['tensors']} tensors "
                  f"({c['parameters']:,} parameters), batch {c['batch']}, C = {c['clip']:.3g} "
                  f"({c['clipped']} of {c['batch']} clipped): max abs diff {c['max_abs_diff']:.2e} "
                  f"(max |grad| {c['max_abs_grad']:.2e}) {'OK' if c['ok'] else 'MISMATCH'}",
                  file=sys.stderr if args.json else sys.stdout, flush=True)
        if not all(c["ok"] for c in model_checks):
            raise SystemExit(f"{model_name}: ours and Opacus disagree on the clipped gradient: not timing it")
        for batch in args.batch_sizes:
            for threads in args.threads:
                progress(f"timing {model_name} batch {batch} threads {threads}")
                measured = _child(["--time-one", model_name, str(batch), str(threads), "--reps", str(args.reps)])
                for row in measured:
                    if not args.no_memory:
                        progress(f"memory {model_name}/{row['objective']} {row['variant']} batch {batch} "
                                 f"threads {threads}")
                        row.update(_child(["--mem-one", model_name, row["objective"], row["variant"], str(batch),
                                           str(threads), "--mem-steps", str(args.mem_steps)]))
                rows += measured

    for r in rows:
        same = {x["variant"]: x for x in rows if (x["model"], x["objective"], x["batch"], x["threads"])
                == (r["model"], r["objective"], r["batch"], r["threads"])}
        base = same["nonprivate"]
        r["step_ratio_vs_nonprivate"] = _ratio(r["step_ms"], base["step_ms"])
        r["step_ratio_vs_nonprivate_by_round"] = _paired_ratio(r["step_ms_each_round"], base["step_ms_each_round"])
        r["mem_ratio_vs_nonprivate"] = _ratio(r.get("peak_rss_increase_mib"), base.get("peak_rss_increase_mib"))
        r["live_ratio_vs_nonprivate"] = _ratio(r.get("peak_live_increase_mib"), base.get("peak_live_increase_mib"))
        opacus = [same[v]["step_ms"] for v in OPACUS if v in same]
        r["step_ratio_vs_opacus_best"] = _ratio(r["step_ms"], min(opacus)) if opacus else None

    import opacus

    result = {
        **_headline(rows, args.batch_sizes, args.threads),
        "checks": checks,
        "not_run": [{"model": m, "objective": o, "variant": v, "why": why} for (m, o, v), why in NOT_RUN.items()
                    if m in args.models],
        "settings": {"reps": args.reps, "warmup": WARMUP, "mem_steps": None if args.no_memory else args.mem_steps,
                     "clip": CLIP, "noise_multiplier": 0.0,
                     "step_time": "median wall time per step (cpu_ms: median process CPU time, all threads)"},
        "environment": {"allocator": allocator_in_use(), "torch": torch.__version__, "opacus": opacus.__version__,
                        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                        "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0]},
        "run_seconds": time.perf_counter() - started,
        "rows": rows,
    }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    _print_table(rows)
    for item in result["not_run"]:
        print(f"not run: {item['model']}/{item['objective']} {item['variant']}: {item['why']}")
    if result["ratio_vs_nonprivate"] is not None:
        basis = result["headline_basis"]
        fmt = {k: "-" if result[k] is None else f"{result[k]:.2f}x"
               for k in ("ratio_vs_nonprivate", "ratio_vs_opacus_best", "peak_mem_ratio", "peak_live_ratio")}
        by_round = result["ratio_vs_nonprivate_by_round"]
        print(f"demo, batch {basis['batch']}, {basis['threads']} thread(s): ours vs non-private "
              f"{fmt['ratio_vs_nonprivate']} (full objective; round by round {by_round['median']:.2f}x, quartiles "
              f"{by_round['iqr'][0]:.2f}-{by_round['iqr'][1]:.2f}), vs the faster Opacus {fmt['ratio_vs_opacus_best']} "
              f"(single objective), peak memory vs non-private {fmt['peak_mem_ratio']} (full objective, "
              f"{result['environment']['allocator']} malloc; {fmt['peak_live_ratio']} in live bytes, without heap "
              "fragmentation, measured under glibc only)")
    print(f"run time {result['run_seconds']:.0f} s")


if __name__ == "__main__":
    main()
