"""Training throughput: examples/s and peak RSS of one non-private training step, for each named
model size at 1 and 2 threads. Each measurement runs in its own process, so its peak RSS is its own.

    python benchmarks/train_throughput.py [--sizes tiny demo small base] [--steps 8] [--json]

The batch is a real one: synthetic records encoded with a fitted tokenizer, the full objective
(contrastive + caption + masked patches + text->image), AdamW. The ratio column is the speed-up
of 2 threads over 1 for the same size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(size: str, threads: int, steps: int, batch_size: int) -> dict:
    import torch

    from simmim.config import Config
    from simmim.data import synthetic
    from simmim.data.batches import EncodedSet, step_generator
    from simmim.data.tokenizer import WordTokenizer
    from simmim.losses import SimMIMObjective
    from simmim.models import model_config
    from simmim.train.loop import build_model, make_optimizer, standard_step

    torch.set_num_threads(threads)
    image_size = model_config(size).image_size
    cfg = Config.from_dict({"model": {"size": size}, "data": {"image_size": image_size},
                            "train": {"batch_size": batch_size}})
    records = synthetic.generate(batch_size * 2, seed=0, split="train", image_size=image_size)
    tokenizer = WordTokenizer.fit([c for r in records for c in r.captions])
    data = EncodedSet(records, tokenizer, cfg.data.context_length)
    model = build_model(cfg, tokenizer)
    objective = SimMIMObjective(cfg.loss, pad_id=tokenizer.pad_id)
    optimizer = make_optimizer(model, cfg)
    batch = data.batch(torch.arange(batch_size), step_generator(0, 0), num_patches=model.cfg.num_patches,
                       mask_ratio=cfg.train.mask_ratio)

    def step():
        optimizer.zero_grad(set_to_none=True)
        standard_step(model, objective, [batch], cfg.train.grad_clip)
        optimizer.step()

    step()  # warm-up: allocator and kernels
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {"size": size, "threads": threads, "batch_size": batch_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "step_seconds": median, "examples_per_second": batch_size / median,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "demo", "small", "base"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.steps, args.batch_size)))
        return
    rows = []
    for size in args.sizes:
        for threads in args.threads:
            out = subprocess.run([sys.executable, __file__, "--one", size, str(threads), "--steps", str(args.steps),
                                  "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            if not args.json:
                print(f"measured {size} x{threads}", file=sys.stderr)
    base = {r["size"]: r["examples_per_second"] for r in rows if r["threads"] == min(args.threads)}
    for r in rows:
        r["speedup_vs_min_threads"] = r["examples_per_second"] / base[r["size"]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = ("size", "params", "threads", "step ms", "ex/s", "peak RSS MiB", "speed-up")
    print("{:6s} {:>8s} {:>7s} {:>8s} {:>8s} {:>12s} {:>8s}".format(*header))
    for r in rows:
        print(f"{r['size']:6s} {r['parameters'] / 1e6:7.2f}M {r['threads']:7d} {r['step_seconds'] * 1000:8.1f} "
              f"{r['examples_per_second']:8.1f} {r['peak_rss_mib']:12.0f} {r['speedup_vs_min_threads']:7.2f}x")


if __name__ == "__main__":
    main()
