"""Torch models, each built from a typed config and carrying an input contract."""
