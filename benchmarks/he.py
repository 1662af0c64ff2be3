"""Paillier at 2048 bits, one core: simmim.crypto against phe (python-paillier) in the same run.

    python benchmarks/he.py [--values 100000] [--vectors 10] [--reps 3] [--phe-encrypt 200]
                            [--phe-sum 2000] [--phe-decrypt 300] [--no-ckks] [--cpu N] [--json]
                            [--json-out FILE]

Jobs (both libraries under the same 2048-bit key: phe's primes imported with keypair_from_primes):

  encrypt      a vector of --values floats (uniform in [-64, 64)), public-key encryption
  sum          the homomorphic sum of --vectors such encrypted vectors
  decrypt      decryption of that sum
  linear head  Enc(x) -> Enc(W x) for a 512-value embedding and a 10 x 512 weight matrix
  bytes        ciphertext bytes of the encrypted vector

Ours: fixed point with 24 fraction bits (rounding error <= 3e-8), |x| <= 64, packed with headroom
for 16 additions (36-bit slots, 56 values per ciphertext), default "djn" randomisation (no
short-exponent assumption), binary serialisation. The linear head uses unpacked ciphertexts and
weights rounded to 16 fraction bits, and re-randomises its outputs.

phe: its default float encoding (each value gets its own exponent); `EncryptedNumber` additions
and products as a phe user writes them; bytes counted as 512 per ciphertext (its raw size, less
than any phe serialisation). The sum is also timed with fixed precision (all exponents equal,
phe's best case) and the linear head also with integer weights equal to ours (phe's best case);
those figures are printed beside the main ones.

phe is too slow to run at full size (about 100 encryptions/s: 100k values would take ~17 min), so
each phe job runs on a subset (--phe-encrypt, --phe-sum, --phe-decrypt values) and its rate is
scaled linearly to the full job: every phe operation here is per value, independent of the
others. phe's input ciphertexts for the sum, decryption and linear head are made by our key-holder
encryption of phe's own encodings (the same integers, valid phe ciphertexts; only their making is
faster and it is not timed).

CKKS (TenSEAL, if installed): the same jobs once, for context, with its approximation error.

Noise: the machine may be shared. Each job alternates ours and phe --reps times and takes the
median of each, so both see the same load; ratios are ours over phe (bytes: ours / phe).
Every result is decrypted and checked before any figure is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import phe

from one_core import add_output_arguments, run_on_one_core
from simmim.crypto.encoding import FixedPoint
from simmim.crypto.linear import encrypted_linear
from simmim.crypto.paillier import keypair_from_primes
from simmim.crypto.serialization import vector_to_bytes
from simmim.crypto.vector import decrypt_vector, encrypt_vector, sum_vectors

CODEC = FixedPoint(fraction_bits=24, max_abs=64.0)
MAX_ADDITIONS = 16
PHE_CIPHERTEXT_BYTES = 512  # 4096-bit ciphertext, 2048-bit key
EMBED_DIM, CLASSES, WEIGHT_FRACTION_BITS = 512, 10, 16


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def alternate(reps: int, ours, theirs) -> tuple[float, float, object, object]:
    """Median seconds of ours() and theirs(), run alternately; also their last results."""
    ours_times, their_times = [], []
    ours_result = their_result = None
    for _ in range(reps):
        seconds, ours_result = timed(ours)
        ours_times.append(seconds)
        seconds, their_result = timed(theirs)
        their_times.append(seconds)
    return statistics.median(ours_times), statistics.median(their_times), ours_result, their_result


def phe_ciphertexts(private, phe_public, values, *, precision=None) -> list:
    """phe EncryptedNumbers of `values` (phe's encoding), made fast by our key-holder encryption."""
    numbers = []
    n = int(phe_public.n)
    for value in values:
        encoded = phe.EncodedNumber.encode(phe_public, value, precision=precision)
        signed = encoded.encoding if encoded.encoding <= n // 2 else encoded.encoding - n
        numbers.append(phe.EncryptedNumber(phe_public, int(private.encrypt(signed, "djn-short")), encoded.exponent))
    return numbers


def phe_sum(vectors: list[list]) -> list:
    return [sum(column[1:], column[0]) for column in zip(*vectors)]


def run(args) -> dict:
    rng = np.random.default_rng(0)
    phe_public, phe_private = phe.generate_paillier_keypair(n_length=2048)
    public, private = keypair_from_primes(phe_private.p, phe_private.q)
    assert public.n == phe_public.n
    n_values = args.values
    vectors_x = [rng.uniform(-64, 64, n_values) for _ in range(args.vectors)]
    x = vectors_x[0]
    report: dict = {"key_bits": public.bits, "values": n_values, "vectors": args.vectors, "reps": args.reps,
                    "cpu": args.cpu, "codec": {"fraction_bits": CODEC.fraction_bits, "max_abs": CODEC.max_abs,
                                               "max_additions": MAX_ADDITIONS}}

    # Warm-up outside the timings: the fixed-base tables (built once per key and process).
    t_table, _ = timed(lambda: public.randomiser("djn"))
    report["djn_table_seconds"] = t_table
    private.randomiser("djn")
    private.randomiser("djn-short")

    # 1. Encrypt.
    subset = x[: args.phe_encrypt].tolist()
    ours_s, phe_s, encrypted, _ = alternate(
        args.reps, lambda: encrypt_vector(public, x, codec=CODEC, max_additions=MAX_ADDITIONS),
        lambda: [phe_public.encrypt(v) for v in subset])
    layout = encrypted.layout
    report["layout"] = {"slot_bits": layout.slot_bits, "slots": layout.slots, "ciphertexts": len(encrypted.ciphertexts)}
    report["encrypt"] = {"ours_values_per_s": n_values / ours_s, "phe_values_per_s": len(subset) / phe_s,
                         "phe_measured_on": len(subset)}
    t_holder, _ = timed(lambda: encrypt_vector(private, x, codec=CODEC, max_additions=MAX_ADDITIONS))
    t_short, _ = timed(lambda: encrypt_vector(public, x, codec=CODEC, max_additions=MAX_ADDITIONS, mode="djn-short"))
    t_classic_part, _ = timed(lambda: encrypt_vector(public, x[: 50 * layout.slots], codec=CODEC,
                                                     max_additions=MAX_ADDITIONS, mode="classic"))
    report["encrypt"].update(key_holder_crt_values_per_s=n_values / t_holder,
                             djn_short_values_per_s=n_values / t_short,
                             classic_values_per_s=50 * layout.slots / t_classic_part)

    # 2. Sum of --vectors encrypted vectors.
    ours_vectors = [encrypted] + [encrypt_vector(private, v, codec=CODEC, max_additions=MAX_ADDITIONS, mode="djn-short")
                                  for v in vectors_x[1:]]
    k = args.phe_sum
    phe_vectors = [phe_ciphertexts(private, phe_public, v[:k].tolist()) for v in vectors_x]
    ours_s, phe_s, total, phe_total = alternate(args.reps, lambda: sum_vectors(ours_vectors),
                                                lambda: phe_sum(phe_vectors))
    report["sum"] = {"ours_values_per_s": n_values / ours_s, "phe_values_per_s": k / phe_s, "phe_measured_on": k}
    fixed = [phe_ciphertexts(private, phe_public, v[:k].tolist(), precision=2.0**-24) for v in vectors_x]
    phe_fixed_s, _ = timed(lambda: phe_sum(fixed))
    report["sum"]["phe_fixed_precision_values_per_s"] = k / phe_fixed_s

    # 3. Decrypt the sum.
    d = args.phe_decrypt
    ours_s, phe_s, decrypted, phe_decrypted = alternate(
        args.reps, lambda: decrypt_vector(private, total), lambda: [phe_private.decrypt(c) for c in phe_total[:d]])
    expected = np.sum(vectors_x, axis=0)
    error = float(np.abs(decrypted - expected).max())
    phe_error = float(np.abs(np.array(phe_decrypted) - expected[:d]).max())
    if error > args.vectors * 2.0**-25 + 1e-9 or phe_error > 1e-6:
        raise SystemExit(f"wrong sum: max error ours {error}, phe {phe_error}")
    report["decrypt"] = {"ours_values_per_s": n_values / ours_s, "phe_values_per_s": d / phe_s, "phe_measured_on": d,
                         "ours_max_error": error}

    # 4. Encrypted linear head 512 -> 10.
    embedding = rng.normal(size=EMBED_DIM)
    embedding /= np.linalg.norm(embedding)
    weights = rng.normal(size=(CLASSES, EMBED_DIM)) / np.sqrt(EMBED_DIM)
    weights_q = np.rint(weights * 2**WEIGHT_FRACTION_BITS).astype(np.int64)
    ours_x = encrypt_vector(private, embedding, codec=FixedPoint(24, 1.0), packed=False)
    phe_x = phe_ciphertexts(private, phe_public, embedding.tolist())
    float_rows = weights.tolist()
    int_rows = weights_q.tolist()

    def phe_head(rows):
        return [sum((xi * w for xi, w in zip(phe_x[1:], row[1:])), phe_x[0] * row[0]) for row in rows]

    ours_s, phe_s, ours_scores, phe_scores = alternate(
        args.reps, lambda: encrypted_linear(ours_x, weights, weight_fraction_bits=WEIGHT_FRACTION_BITS),
        lambda: phe_head(float_rows))
    phe_int_s, phe_int_scores = timed(lambda: phe_head(int_rows))
    ours_plain = decrypt_vector(private, ours_scores)
    phe_plain = np.array([phe_private.decrypt(c) for c in phe_scores])
    phe_int_plain = np.array([phe_private.decrypt(c) for c in phe_int_scores]) / 2**WEIGHT_FRACTION_BITS
    reference = weights @ embedding
    if max(np.abs(ours_plain - reference).max(), np.abs(phe_plain - reference).max(),
           np.abs(phe_int_plain - reference).max()) > 1e-3:
        raise SystemExit("wrong linear head result")
    report["linear_head"] = {"ours_seconds": ours_s, "phe_seconds": phe_s, "phe_int_weights_seconds": phe_int_s}

    # 5. Bytes.
    ours_bytes = len(vector_to_bytes(encrypted))
    report["bytes"] = {"ours": ours_bytes, "phe": PHE_CIPHERTEXT_BYTES * n_values,
                       "ours_per_value": ours_bytes / n_values}
    if not args.no_ckks:
        report["ckks"] = ckks_figures(vectors_x, embedding, weights)

    report.update(
        encrypt_speedup=report["encrypt"]["ours_values_per_s"] / report["encrypt"]["phe_values_per_s"],
        encrypt_short_exponent_speedup=report["encrypt"]["djn_short_values_per_s"]
        / report["encrypt"]["phe_values_per_s"],
        decrypt_speedup=report["decrypt"]["ours_values_per_s"] / report["decrypt"]["phe_values_per_s"],
        sum_speedup=report["sum"]["ours_values_per_s"] / report["sum"]["phe_values_per_s"],
        sum_speedup_vs_phe_fixed_precision=report["sum"]["ours_values_per_s"]
        / report["sum"]["phe_fixed_precision_values_per_s"],
        ciphertext_bytes_ratio=ours_bytes / report["bytes"]["phe"],
        linear_head_speedup=phe_s / ours_s,
        linear_head_speedup_vs_phe_int_weights=phe_int_s / ours_s,
    )
    return report


def ckks_figures(vectors_x: list[np.ndarray], embedding: np.ndarray, weights: np.ndarray) -> dict | None:
    """The same jobs with CKKS (TenSEAL, N = 8192): approximate results, for context; once each."""
    try:
        from simmim.crypto import ckks
    except ImportError:
        return None
    if ckks.ts is None:
        return None
    keys = ckks.CkksKeys.generate()
    n_values = vectors_x[0].size
    t_encrypt, encrypted = timed(lambda: [ckks.encrypt_vector(keys, v) for v in vectors_x])
    t_sum, total = timed(lambda: ckks.sum_vectors(encrypted))
    t_decrypt, result = timed(lambda: ckks.decrypt_vector(keys, total))
    query = ckks.encrypt_vector(keys, embedding)
    t_head, scores = timed(lambda: ckks.linear(query, weights))
    return {"encrypt_values_per_s": n_values * len(vectors_x) / t_encrypt, "sum_values_per_s": n_values / t_sum,
            "decrypt_values_per_s": n_values / t_decrypt, "linear_head_seconds": t_head,
            "bytes": len(ckks.vector_to_bytes(encrypted[0])),
            "sum_max_error": float(np.abs(result - np.sum(vectors_x, axis=0)).max()),
            "linear_head_max_error": float(np.abs(ckks.decrypt_scores(keys, scores) - weights @ embedding).max())}


GOALS = {"encrypt_speedup": (">=", 400), "decrypt_speedup": (">=", 30), "sum_speedup": (">=", 150),
         "ciphertext_bytes_ratio": ("<=", 1 / 28), "linear_head_speedup": (">=", 10)}


def print_table(report: dict) -> None:
    n = report["values"]
    print(f"Paillier {report['key_bits']}-bit, one core (cpu {report['cpu']}), {n} values, median of "
          f"{report['reps']}; layout {report['layout']}")
    rows = [("encrypt", "encrypt"), ("sum", "sum"), ("decrypt", "decrypt")]
    print(f"{'job':<12}{'ours values/s':>16}{'phe values/s':>16}{'phe measured on':>18}")
    for name, key in rows:
        r = report[key]
        print(f"{name:<12}{r['ours_values_per_s']:>16,.0f}{r['phe_values_per_s']:>16,.1f}{r['phe_measured_on']:>18}")
    e = report["encrypt"]
    print(f"  encrypt, other modes (values/s): key-holder CRT {e['key_holder_crt_values_per_s']:,.0f}, "
          f"djn-short {e['djn_short_values_per_s']:,.0f}, classic {e['classic_values_per_s']:,.0f}")
    print(f"  sum, phe with fixed precision: {report['sum']['phe_fixed_precision_values_per_s']:,.0f} values/s")
    h = report["linear_head"]
    print(f"linear head 512->10: ours {h['ours_seconds'] * 1000:.0f} ms, phe {h['phe_seconds'] * 1000:.0f} ms "
          f"(float weights), {h['phe_int_weights_seconds'] * 1000:.0f} ms (int16 weights)")
    b = report["bytes"]
    print(f"ciphertext bytes: ours {b['ours']:,} ({b['ours_per_value']:.1f}/value), phe {b['phe']:,}")
    print("phe rates are measured on the subsets shown and scaled linearly to the full job.")
    c = report.get("ckks")
    if c:
        print(f"CKKS (TenSEAL, N=8192, one run): encrypt {c['encrypt_values_per_s']:,.0f}/s, sum "
              f"{c['sum_values_per_s']:,.0f}/s, decrypt {c['decrypt_values_per_s']:,.0f}/s, linear head "
              f"{c['linear_head_seconds'] * 1000:.0f} ms, {c['bytes']:,} bytes; max error sum "
              f"{c['sum_max_error']:.1e}, head {c['linear_head_max_error']:.1e}")
    for key, (op, goal) in GOALS.items():
        value = report[key]
        met = value >= goal if op == ">=" else value <= goal
        print(f"{key:<28}{value:>12.4g}   goal {op} {goal:.4g}  {'met' if met else 'NOT MET'}")
    for key in ("encrypt_short_exponent_speedup", "sum_speedup_vs_phe_fixed_precision",
                "linear_head_speedup_vs_phe_int_weights"):
        print(f"{key:<40}{report[key]:>10.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=100_000)
    parser.add_argument("--vectors", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--phe-encrypt", type=int, default=200, help="values phe encrypts per repetition")
    parser.add_argument("--phe-sum", type=int, default=2000, help="values per vector in phe's sum")
    parser.add_argument("--phe-decrypt", type=int, default=300, help="values phe decrypts per repetition")
    parser.add_argument("--no-ckks", action="store_true", help="skip the CKKS (TenSEAL) figures")
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.vectors > MAX_ADDITIONS:
        parser.error(f"--vectors at most {MAX_ADDITIONS} (the declared headroom)")
    run_on_one_core(args, run, print_table)


if __name__ == "__main__":
    main()
