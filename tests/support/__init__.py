"""Helpers shared by test suites (importable as `tests.support` or `support`)."""
