"""Evaluation: retrieval, zero-shot, captioning, text->image checks and linear probes,
every metric reported beside its chance level."""
