"""Helpers for tests that drive real meshd processes."""
