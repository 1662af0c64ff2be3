"""Benchmark app: federated SimMIM rounds aggregated by Flower's own SecAgg+ (or its plain FedAvg)."""
