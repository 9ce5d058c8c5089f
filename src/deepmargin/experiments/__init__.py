"""Studies assembled from the library: the demo and the paper's sweeps."""
