"""Chaos scenarios: real processes on loopback, a fault under load, one table row each."""
