"""Data: the synthetic generator, the formats users bring, the tokenizer and datasets."""
