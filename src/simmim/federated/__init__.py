"""Federated SimMIM on Flower: each party trains where its data is, the server sees only an aggregate.

    simmim fed run --clients 3 --rounds 3 --secure-agg --epsilon 8 --json

starts a real Flower deployment on loopback (a SuperLink and one SuperNode per party, each its own
process), runs the app (`server_app`, `client_app`), and prints what came out. Aggregation is a plain
sum, secure aggregation (`simmim.crypto.secagg`) or Paillier (`simmim.crypto.aggregation`); client-level
DP-FedAvg (`dp`) clips every party's update and adds Gaussian noise to the sum, with accounting.
See docs/federated.md.
"""

from simmim.federated.settings import AGGREGATIONS, FedSettings

__all__ = ["AGGREGATIONS", "FedSettings"]
