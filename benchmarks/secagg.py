"""Secure aggregation in-process: masked sums against a plain numpy sum; Shamir against pycryptodome.

    python benchmarks/secagg.py [--length 1048576] [--clients 10,50] [--dropout-clients 50]
                                [--dropouts 0,5,10,15,20,24] [--shamir-batch 10000] [--reps 5]
                                [--quick] [--json] [--json-out FILE]
                                [--loopback [--loopback-only] [--loopback-clients 3] [--loopback-rounds 3]
                                 [--loopback-local-steps 20] [--loopback-config tiny] [--flower-poll 3]
                                 [--flower-plain] [--loopback-workdir DIR]]

Jobs:

  aggregation  one secure round (simmim.crypto.secagg, every message through its byte form) of
               --length float32 parameters per client, for each n in --clients, with the complete
               graph (SecAgg, threshold n//2 + 1) and with a sparse graph (SecAgg+, k = the even number
               nearest above 2 log2 n, threshold k//2 + 1); against the plain float32 sum of the same
               updates (median of --reps). Reported: the whole in-process round (all clients one after
               the other, then the server), the mean and slowest client, the server, bytes each client
               uploads per parameter, and the ratios to the plain sum. `parallel` is the slowest client
               plus the server: the round's compute when clients run on their own machines.
  dropouts     the server's recovery (secret reconstruction and unmasking) for --dropout-clients
               clients when d of them drop after sharing keys (the costly case: their pairwise masks
               must be rebuilt), for each d in --dropouts, both graphs; with a least-squares line. The
               dropouts are spaced evenly around the ring; a sparse graph refuses the round when a
               neighbourhood falls below its threshold, and such points are listed as refused.
  shamir       splitting 16-byte secrets into n shares (threshold t) and recovering them from t shares,
               for (n, t) = (11, 6) and (51, 26): ours batched (--shamir-batch secrets in one call, 3
               field elements each), ours one secret per call, and pycryptodome's
               Crypto.Protocol.SecretSharing.Shamir (one secret per call: its API), if installed.

  loopback     (only with --loopback) a real deployment on this machine (LoopbackDeployment: a SuperLink
               and --loopback-clients SuperNodes, separate processes on loopback HTTP), shared by every
               run: --loopback-rounds federated rounds of SimMIM (config --loopback-config, local_steps
               --loopback-local-steps, every party every round, no DP) with SimMIM's app and aggregation
               "plain", then "secagg" (ours), then Flower's own SecAgg+ (benchmarks/flower_secaggplus:
               the same model, partitions and local_update, FedAvg through
               DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...)), secaggplus_mod on the parties).
               A round's seconds are the server's: from sending the global weights to the new global
               weights (evaluation excluded). Reported: the median round over rounds 2..R (round 1
               includes one-off setup: each SuperNode fetches and unpacks the run's app bundle on its
               first message, and the app's first imports), round 1 on its own, ratios to our plain
               FedAvg, and the bytes each party uploads per parameter (its update or masked vector).
               Flower's server polls for replies every 3 s (Grid.send_and_receive), ours every 0.05 s;
               --flower-poll 3,0.05 also runs Flower's app polling every 0.05 s (the same loop, its
               sleep changed), to separate the protocol's cost from the polling. --flower-plain adds
               Flower's plain FedAvg (default fit workflow) at each poll interval. --loopback-only skips
               the in-process jobs. --quick with --loopback: 2 rounds of 2 local steps.

Every secure sum is checked against the float sum (error at most n half-steps of the quantisation
plus float32 rounding) and every recovered secret against the original before figures are printed.
Noise: the machine may be shared; ratios within one run are the figures to trust.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from simmim.crypto import shamir
from simmim.crypto.secagg import new_round
from simmim.crypto.secagg_graph import ring_order
from simmim.crypto.secagg_local import run_in_process
from simmim.errors import CryptoError

CLIP = 1.0
FLOWER_APP = Path(__file__).resolve().parent / "flower_secaggplus"
FLOWER_STOCK_POLL = 3.0  # seconds: Flower's Grid.send_and_receive


def sparse_degree(clients: int) -> int:
    """The SecAgg+ degree used here: the even number at or above 2 log2 n, at most n - 2."""
    degree = 2 * math.ceil(math.log2(clients))
    return min(degree + degree % 2, clients - 2 - clients % 2)


def graphs(clients: int) -> list[tuple[str, int, int]]:
    """(name, neighbours, threshold) for the complete graph and the sparse one."""
    degree = sparse_degree(clients)
    return [("complete", 0, clients // 2 + 1), (f"sparse k={degree}", degree, (degree + 1) // 2 + 1)]


def make_updates(clients: int, length: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {cid: rng.uniform(-CLIP, CLIP, length).astype(np.float32) for cid in range(1, clients + 1)}


def plain_sum(updates: dict[int, np.ndarray]) -> np.ndarray:
    total = np.zeros_like(next(iter(updates.values())))
    for update in updates.values():
        total += update
    return total


def check_sum(outcome, updates) -> float:
    """Max error of the secure sum against the float64 sum of the contributors; fails the run if too big."""
    contributors = outcome.result.contributors
    exact = sum(updates[c].astype(np.float64) for c in contributors)
    error = float(np.abs(outcome.result.dequantise() - exact).max())
    bound = len(contributors) * 2.0 ** -(outcome.result.config.fraction_bits + 1) + 1e-12
    if error > bound:
        raise SystemExit(f"secure sum is off by {error} (bound {bound}); no figures")
    return error


def bench_aggregation(clients_list: list[int], length: int, reps: int) -> list[dict]:
    rows = []
    for clients in clients_list:
        updates = make_updates(clients, length, seed=clients)
        plain_times = []
        for _ in range(reps):
            start = time.perf_counter()
            plain_sum(updates)
            plain_times.append(time.perf_counter() - start)
        plain = statistics.median(plain_times)
        for name, neighbours, threshold in graphs(clients):
            start = time.perf_counter()
            outcome = run_in_process(updates, threshold=threshold, clip=CLIP, neighbours=neighbours, over_wire=True)
            total = time.perf_counter() - start
            error = check_sum(outcome, updates)
            client_times = list(outcome.client_seconds.values())
            upload = statistics.mean(outcome.upload_bytes.values()) / length
            parallel = max(client_times) + outcome.server_seconds
            rows.append({"clients": clients, "graph": name, "neighbours": neighbours, "threshold": threshold,
                         "length": length, "plain_sum_s": plain, "round_s": total,
                         "client_mean_s": statistics.mean(client_times), "client_max_s": max(client_times),
                         "server_s": outcome.server_seconds, "unmask_s": outcome.unmask_seconds,
                         "parallel_s": parallel, "round_over_plain": total / plain,
                         "parallel_over_plain": parallel / plain, "upload_bytes_per_param": upload,
                         "fraction_bits": outcome.result.config.fraction_bits, "max_abs_error": error})
    return rows


def bench_dropouts(clients: int, dropouts: list[int], length: int) -> list[dict]:
    rows = []
    updates = make_updates(clients, length, seed=1)
    for name, neighbours, threshold in graphs(clients):
        for count in dropouts:
            if count > clients - threshold:
                continue
            config = new_round(updates, threshold=threshold, vector_length=length, clip=CLIP, neighbours=neighbours)
            # Evenly spaced around the ring, so that no neighbourhood loses more than its share.
            order = ring_order(config)
            gone = {order[i * clients // count] for i in range(count)} if count else set()
            try:
                outcome = run_in_process(updates, config=config, drop={"masked": gone})
            except CryptoError as error:  # a neighbourhood fell below the threshold: SecAgg+ refuses
                print(f"  {name}, {count} dropouts: {error}", file=sys.stderr)
                rows.append({"clients": clients, "graph": name, "dropouts": count, "length": length,
                             "refused": str(error)})
                continue
            check_sum(outcome, updates)
            rows.append({"clients": clients, "graph": name, "dropouts": count, "length": length,
                         "unmask_s": outcome.unmask_seconds, "server_s": outcome.server_seconds})
    for name in {row["graph"] for row in rows}:
        points = [(row["dropouts"], row["unmask_s"]) for row in rows if row["graph"] == name and "unmask_s" in row]
        if len(points) >= 2:
            slope, intercept = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
            for row in rows:
                if row["graph"] == name:
                    row["fit_intercept_s"], row["fit_s_per_dropout"] = float(intercept), float(slope)
    return rows


def time_per_call(function, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def bench_shamir(batch: int, quick: bool) -> list[dict]:
    try:
        from Crypto.Protocol.SecretSharing import Shamir as PyCryptodomeShamir
    except ImportError:
        PyCryptodomeShamir = None
    rows = []
    for parties, threshold in ((11, 6), (51, 26)):
        xs = list(range(1, parties + 1))
        secrets_16 = [secrets.token_bytes(16) for _ in range(batch)]
        elements = np.concatenate([shamir.bytes_to_elements(s) for s in secrets_16])  # 3 per secret
        start = time.perf_counter()
        shares = shamir.split(elements, threshold, xs)
        batched_split = (time.perf_counter() - start) / batch
        picked = list(range(parties - threshold, parties))  # the last t shares
        start = time.perf_counter()
        recovered = shamir.recover([xs[i] for i in picked], shares[picked], threshold)
        batched_recover = (time.perf_counter() - start) / batch
        if not np.array_equal(recovered, elements):
            raise SystemExit("batched Shamir recovery failed; no figures")
        one = shamir.bytes_to_elements(secrets_16[0])
        calls = 20 if quick else 200
        single_split = time_per_call(lambda: shamir.split(one, threshold, xs), calls)  # noqa: B023
        one_shares = shamir.split(one, threshold, xs)
        single_recover = time_per_call(lambda: shamir.recover(xs[:threshold], one_shares[:threshold], threshold),  # noqa: B023
                                       calls)
        if shamir.elements_to_bytes(shamir.recover(xs[:threshold], one_shares[:threshold], threshold), 16) != \
                secrets_16[0]:
            raise SystemExit("Shamir recovery of one secret failed; no figures")
        row = {"parties": parties, "threshold": threshold, "secret_bytes": 16, "batch": batch,
               "ours_batched_split_s_per_secret": batched_split, "ours_batched_recover_s_per_secret": batched_recover,
               "ours_single_split_s": single_split, "ours_single_recover_s": single_recover}
        if PyCryptodomeShamir is not None:
            theirs = 3 if quick else (10 if parties > 20 else 40)
            their_split = time_per_call(lambda: PyCryptodomeShamir.split(threshold, parties, secrets_16[1]),  # noqa: B023
                                        theirs)
            their_shares = PyCryptodomeShamir.split(threshold, parties, secrets_16[1])[-threshold:]
            their_recover = time_per_call(lambda: PyCryptodomeShamir.combine(their_shares), theirs)  # noqa: B023
            if PyCryptodomeShamir.combine(their_shares) != secrets_16[1]:
                raise SystemExit("pycryptodome recovery failed; no figures")
            row |= {"pycryptodome_split_s": their_split, "pycryptodome_recover_s": their_recover,
                    "batched_split_speedup": their_split / batched_split,
                    "batched_recover_speedup": their_recover / batched_recover,
                    "single_split_speedup": their_split / single_split,
                    "single_recover_speedup": their_recover / single_recover}
        rows.append(row)
    return rows


def flower_app(poll: float, workdir: Path) -> Path:
    """benchmarks/flower_secaggplus as is (Flower's stock 3 s poll), or a copy polling every `poll` s."""
    if poll == FLOWER_STOCK_POLL:
        return FLOWER_APP
    copy = workdir / f"flower-app-poll-{poll:g}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(FLOWER_APP, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text()
    if f"poll-seconds = {FLOWER_STOCK_POLL}" not in text:
        raise SystemExit(f"{FLOWER_APP / 'pyproject.toml'} has no 'poll-seconds = {FLOWER_STOCK_POLL}' to change")
    pyproject.write_text(text.replace(f"poll-seconds = {FLOWER_STOCK_POLL}", f"poll-seconds = {poll!r}"))
    return copy


def loopback_runs(polls: list[float], flower_plain: bool) -> list[tuple[str, str, str, float | None]]:
    """(label, app, aggregation, Flower's poll seconds) of each run, in the order they run."""
    runs = [("plain FedAvg (ours)", "simmim", "plain", None), ("secure aggregation (ours)", "simmim", "secagg", None)]
    for poll in polls:
        stock = " (stock 3 s poll)" if poll == FLOWER_STOCK_POLL else f" (poll {poll:g} s)"
        if flower_plain:
            runs.append(("Flower plain FedAvg" + stock, "flower", "plain", poll))
        runs.append(("Flower SecAgg+" + stock, "flower", "secagg", poll))
    return runs


def bench_loopback(args) -> dict:
    """R rounds of each run on one shared deployment; per-round seconds from the server's records."""
    from simmim.federated.deployment import DeploymentError, LoopbackDeployment
    from simmim.federated.settings import FedSettings

    settings = FedSettings(config=args.loopback_config, clients=args.loopback_clients, rounds=args.loopback_rounds,
                           local_steps=args.loopback_local_steps, aggregation="plain",
                           min_clients=args.loopback_clients)
    polls = [float(p) for p in args.flower_poll.split(",")]
    with contextlib.ExitStack() as stack:
        workdir = Path(args.loopback_workdir).resolve() if args.loopback_workdir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="secagg-loopback-")))
        workdir.mkdir(parents=True, exist_ok=True)
        deployment = stack.enter_context(LoopbackDeployment(settings.clients, workdir / "deployment"))
        rows = []
        for index, (label, app, aggregation, poll) in enumerate(loopback_runs(polls, args.flower_plain)):
            app_dir = flower_app(poll, workdir) if app == "flower" else None
            print(f"loopback: {label}, {settings.rounds} rounds ...", file=sys.stderr, flush=True)
            row = {"run": label, "app": app, "aggregation": aggregation, "flower_poll_s": poll}
            started = time.perf_counter()
            try:
                result = deployment.run(replace(settings, aggregation=aggregation), out=workdir / f"run-{index}",
                                        app_dir=app_dir,
                                        on_round=lambda r: print(f"  round {r['round']}: {r['seconds']:.2f} s",
                                                                 file=sys.stderr, flush=True))
            except DeploymentError as error:
                print(f"  failed: {error}", file=sys.stderr)
                rows.append(row | {"error": str(error)})
                continue
            rounds = result["rounds"]
            seconds = [r["seconds"] for r in rounds]
            timed = seconds[1:] if len(seconds) > 1 else seconds
            uploads = [r["upload_bytes_per_parameter"] for r in rounds if r.get("upload_bytes_per_parameter")]
            rows.append(row | {
                "round_seconds": seconds, "round1_s": seconds[0] if seconds else None,
                "median_s": statistics.median(timed) if timed else None,
                "median_rounds": "2.." + str(len(seconds)) if len(seconds) > 1 else "1",
                "contributors": [r.get("contributors") for r in rounds],
                "upload_bytes_per_param": statistics.mean(uploads) if uploads else None,
                "all_upload_bytes_per_param": rounds[-1].get("all_upload_bytes_per_parameter") if rounds else None,
                "initial_test_loss": result.get("initial_metrics", {}).get("test_loss"),
                "final_test_loss": (result.get("metrics") or {}).get("test_loss"),
                "run_wall_s": time.perf_counter() - started})
    plain = next((r["median_s"] for r in rows if r["app"] == "simmim" and r["aggregation"] == "plain"
                  and r.get("median_s")), None)
    for row in rows:
        if plain and row.get("median_s"):
            row["over_plain"] = row["median_s"] / plain
    return {"clients": settings.clients, "rounds": settings.rounds, "local_steps": settings.local_steps,
            "config": settings.config, "round1_excluded": settings.rounds > 1, "runs": rows}


def print_loopback(loopback: dict) -> None:
    excluded = loopback["round1_excluded"]
    print(f"loopback rounds (a real deployment: SuperLink + {loopback['clients']} SuperNodes on loopback; "
          f"config {loopback['config']}, {loopback['local_steps']} local steps, {loopback['rounds']} rounds each)")
    print("| run | median round s | / plain FedAvg (ours) | round 1 s | all rounds s | upload B/param | "
          "test loss before -> after |")
    print("|---|---:|---:|---:|---|---:|---|")
    for r in loopback["runs"]:
        if "error" in r:
            print(f"| {r['run']} | failed: {r['error'][:200]} | | | | | |")
            continue
        ratio = f"{r['over_plain']:.2f}x" if "over_plain" in r else "-"
        upload = f"{r['upload_bytes_per_param']:.2f}" if r.get("upload_bytes_per_param") else "-"
        losses = (f"{r['initial_test_loss']:.2f} -> {r['final_test_loss']:.2f}"
                  if r.get("initial_test_loss") is not None and r.get("final_test_loss") is not None else "-")
        short = [c != loopback["clients"] for c in r["contributors"]]  # a party dropped, or the round was refused
        rounds = ", ".join(f"{s:.1f}" + ("*" if flag else "") for s, flag in zip(r["round_seconds"], short))
        print(f"| {r['run']} | {r['median_s']:.2f} | {ratio} | {r['round1_s']:.2f} | {rounds} | {upload} | {losses} |")
    if excluded:
        print("Median over rounds 2..R: round 1 is excluded (one-off setup: each SuperNode fetches and unpacks the "
              "run's app bundle on its first message).")
    else:
        print("One round only: its time includes one-off setup (the app bundle's first fetch on each SuperNode).")
    if any(c != loopback["clients"] for r in loopback["runs"] for c in r.get("contributors", [])):
        print("* a round with fewer contributors than SuperNodes (a party dropped or the round was refused).")
    print("Goal (issue 6): ours at most 1.3x plain FedAvg. Flower's server polls for replies every 3 s, ours "
          "every 0.05 s (see --flower-poll).")


def print_tables(result: dict) -> None:
    if "aggregation" not in result:
        print_loopback(result["loopback"])
        return
    print("aggregation (in-process, every message as bytes)")
    print("| n | graph | t | plain sum ms | round s | client mean ms | client max ms | server ms | "
          "round / plain | parallel / plain | upload B/param |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["aggregation"]:
        print(f"| {r['clients']} | {r['graph']} | {r['threshold']} | {r['plain_sum_s'] * 1e3:.1f} | "
              f"{r['round_s']:.2f} | {r['client_mean_s'] * 1e3:.0f} | {r['client_max_s'] * 1e3:.0f} | "
              f"{r['server_s'] * 1e3:.0f} | "
              f"{r['round_over_plain']:.0f}x | {r['parallel_over_plain']:.0f}x | {r['upload_bytes_per_param']:.4f} |")
    print("\nrecovery after dropouts (server: secret reconstruction + unmasking)")
    print("| n | graph | dropouts | unmask ms | fit ms per dropout |")
    print("|---|---|---:|---:|---:|")
    for r in result["dropouts"]:
        unmask = f"{r['unmask_s'] * 1e3:.0f}" if "unmask_s" in r else "refused"
        print(f"| {r['clients']} | {r['graph']} | {r['dropouts']} | {unmask} | "
              f"{r.get('fit_s_per_dropout', float('nan')) * 1e3:.1f} |")
    print("\nShamir, 16-byte secrets (per secret)")
    print("| n | t | ours batched split us | ours batched recover us | ours single split us | "
          "ours single recover us | pycryptodome split ms | pycryptodome recover ms | speedup split batched/single | "
          "speedup recover batched/single |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["shamir"]:
        theirs = (f"{r['pycryptodome_split_s'] * 1e3:.2f} | {r['pycryptodome_recover_s'] * 1e3:.2f} | "
                  f"{r['batched_split_speedup']:.0f}x / {r['single_split_speedup']:.0f}x | "
                  f"{r['batched_recover_speedup']:.0f}x / {r['single_recover_speedup']:.0f}x"
                  if "pycryptodome_split_s" in r else "- | - | - | -")
        print(f"| {r['parties']} | {r['threshold']} | {r['ours_batched_split_s_per_secret'] * 1e6:.2f} | "
              f"{r['ours_batched_recover_s_per_secret'] * 1e6:.2f} | {r['ours_single_split_s'] * 1e6:.0f} | "
              f"{r['ours_single_recover_s'] * 1e6:.0f} | {theirs} |")
    if "loopback" in result:
        print()
        print_loopback(result["loopback"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=1 << 20, help="parameters per update (default 1048576)")
    parser.add_argument("--clients", default="10,50", help="comma-separated client counts (default 10,50)")
    parser.add_argument("--dropout-clients", type=int, default=50, help="clients in the dropout job (default 50)")
    parser.add_argument("--dropouts", default="0,5,10,15,20,24", help="dropout counts (default 0,5,10,15,20,24)")
    parser.add_argument("--shamir-batch", type=int, default=10_000, help="secrets per batched Shamir call")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the plain sum (median)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON object to FILE")
    loopback = parser.add_argument_group("loopback rounds (a real deployment; off by default)")
    loopback.add_argument("--loopback", action="store_true", help="also run the loopback rounds")
    loopback.add_argument("--loopback-only", action="store_true", help="only the loopback rounds (implies --loopback)")
    loopback.add_argument("--loopback-clients", type=int, default=3, help="SuperNodes (default 3)")
    loopback.add_argument("--loopback-rounds", type=int, help="rounds per run (default 3; --quick: 2)")
    loopback.add_argument("--loopback-local-steps", type=int, help="local steps per round (default 20; --quick: 2)")
    loopback.add_argument("--loopback-config", default="tiny", help="model and data config (default tiny)")
    loopback.add_argument("--flower-poll", default=str(FLOWER_STOCK_POLL),
                          help="comma-separated seconds between the Flower server's polls, one Flower run each "
                               "(default 3.0: Flower's own)")
    loopback.add_argument("--flower-plain", action="store_true", help="also Flower's plain FedAvg, per poll interval")
    loopback.add_argument("--loopback-workdir", metavar="DIR", help="keep the deployment's logs and runs in DIR")
    args = parser.parse_args()
    if args.quick:
        args.length, args.clients, args.dropout_clients, args.dropouts = 4096, "5", 10, "0,2,4"
        args.shamir_batch, args.reps = 100, 1
    if args.loopback_rounds is None:
        args.loopback_rounds = 2 if args.quick else 3
    if args.loopback_local_steps is None:
        args.loopback_local_steps = 2 if args.quick else 20
    clients = [int(c) for c in args.clients.split(",")]
    dropouts = [int(d) for d in args.dropouts.split(",")]
    started = time.perf_counter()
    result = {"length": args.length}
    if not args.loopback_only:
        result |= {"aggregation": bench_aggregation(clients, args.length, args.reps),
                   "dropouts": bench_dropouts(args.dropout_clients, dropouts, args.length),
                   "shamir": bench_shamir(args.shamir_batch, args.quick)}
    if args.loopback or args.loopback_only:
        result["loopback"] = bench_loopback(args)
    result["seconds"] = time.perf_counter() - started
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(result, handle, indent=2)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_tables(result)


if __name__ == "__main__":
    main()
