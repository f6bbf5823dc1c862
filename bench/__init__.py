"""Benchmarks: Dialer against the Temporal floor on the same server, in the same run."""
