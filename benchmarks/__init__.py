"""Speed and memory measurements of vice against the paper's Tables 7 and 8 (``python -m benchmarks``)."""
