"""Shared test helpers, imported by tests and conftest files; fixtures stay in conftest files."""
