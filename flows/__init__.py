"""Prefect flows: each wires tasks, nothing else."""
