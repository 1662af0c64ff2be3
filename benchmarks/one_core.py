"""What the single-core crypto benchmarks share: their output flags, CPU pinning and output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu", type=int, default=None, help="the one CPU to run on (default: the last allowed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON object to FILE")


def run_on_one_core(args: argparse.Namespace, run: Callable[[argparse.Namespace], dict],
                    print_table: Callable[[dict], None]) -> dict:
    """Pins this process to one CPU (where the OS allows), runs, writes --json-out, prints."""
    if hasattr(os, "sched_setaffinity"):
        args.cpu = sorted(os.sched_getaffinity(0))[-1] if args.cpu is None else args.cpu
        os.sched_setaffinity(0, {args.cpu})
    report = run(args)
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(report, handle, indent=2)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    sys.stdout.flush()
    return report
