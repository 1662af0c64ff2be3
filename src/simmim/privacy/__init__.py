"""Differential privacy: per-example clipping, accounting, budget ledger, mechanisms, local DP."""
