"""Dialer: durable outbound call initiation on Temporal."""
