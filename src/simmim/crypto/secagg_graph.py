"""Who masks with whom and who holds whose shares: the complete graph (SecAgg) or a sparse one (SecAgg+).

With `neighbours = 0` every client pairs with every other (Bonawitz et al. 2017). With an even
`neighbours = k` the clients are placed on a ring in an order drawn from the round id and each pairs
with the k/2 nearest on either side (a Harary graph, as in Bell et al. 2020, "SecAgg+"): a client
then expands k pairwise masks instead of n - 1 and shares its secrets among its k neighbours and
itself, so client cost grows with k, not n, and recovering a dropped client costs k expansions.

The threshold t then counts within a neighbourhood (k + 1 clients with the owner) and must exceed
half of it, so that the two disjoint groups a lying server could ask for the two secrets of one
client cannot both reach t. Bell et al. choose k of order log n for given bounds on dropouts and
corrupt clients; this module takes k as given (docs/secure_aggregation.md).
Every party derives the same graph from the configuration alone.
"""

from __future__ import annotations

import hashlib

from simmim.crypto.secagg_messages import RoundConfig
from simmim.errors import CryptoError


def group_size(clients: int, neighbours: int) -> int:
    """How many clients hold shares of one client's secrets (its neighbours and itself)."""
    return clients if neighbours == 0 else neighbours + 1


def check_graph(clients: int, neighbours: int, threshold: int) -> None:
    """CryptoError unless (neighbours, threshold) are valid for `clients` clients."""
    if neighbours != 0 and (neighbours % 2 or not 2 <= neighbours <= clients - 2):
        raise CryptoError(f"neighbours must be 0 (every client pairs with every other) or even and in "
                          f"[2, {clients - 2}] for {clients} clients, got {neighbours}")
    size = group_size(clients, neighbours)
    if not size // 2 < threshold <= size:
        raise CryptoError(f"threshold must be more than half of the {size} clients that hold each client's "
                          f"shares and at most all of them, got {threshold}")


def ring_order(config: RoundConfig) -> list[int]:
    """The clients in ring order: sorted by SHA-256 of (round id, client id), so fixed by the round id."""
    return sorted(config.clients, key=lambda cid: hashlib.sha256(config.round_id + cid.to_bytes(8, "little")).digest())


def neighbourhoods(config: RoundConfig) -> dict[int, frozenset[int]]:
    """Every client's neighbours (itself excluded)."""
    if config.neighbours == 0:
        everyone = frozenset(config.clients)
        return {cid: everyone - {cid} for cid in config.clients}
    order = ring_order(config)
    half, n = config.neighbours // 2, len(order)
    return {cid: frozenset(order[(i + step) % n] for step in range(-half, half + 1) if step)
            for i, cid in enumerate(order)}
