"""A miniature subnet on loopback for the demo, end-to-end tests, reliability tests and benchmarks."""
