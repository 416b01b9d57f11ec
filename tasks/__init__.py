"""Prefect tasks: each wraps one call into the cropflow library."""
