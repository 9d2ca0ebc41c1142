"""Side-by-side speed and variance measurements; run each from the repository root as ``python -m benchmarks.NAME``."""
