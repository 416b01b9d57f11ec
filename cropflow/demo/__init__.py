"""The bundled demo region: a synthetic but physically plausible Sentinel-2 L2A region."""
