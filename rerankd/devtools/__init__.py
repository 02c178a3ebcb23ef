"""Tools for tests and benchmarks: models built locally, since no hub is needed to run them."""
