"""Label reading, mapping, rasterisation, splits and training sets."""
