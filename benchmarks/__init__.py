"""Benchmarks: alignkit vs the plain scripts a user would otherwise write, measured side by side (`make bench`)."""
