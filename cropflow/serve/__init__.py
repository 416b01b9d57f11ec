"""The map server of ``cropflow serve`` (FastAPI): published maps, tiles, on-demand maps."""
