"""Benchmarks: each compares cropflow side by side with a baseline or a physical limit."""
