"""Analysis-ready Zarr datacubes built on Dask."""
