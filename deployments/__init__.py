"""cropflow deployments."""
