"""STAC search, provider profiles and the local STAC API server."""
