"""Benchmarks of verity against peer tools (TRL, verifiers); see benchmarks/README.md."""
