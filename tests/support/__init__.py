"""Helpers shared by test suites (`tests.support`)."""
