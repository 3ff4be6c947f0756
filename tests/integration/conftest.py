"""Fixtures for the participant and probe integration tests: see tests/conftest.py (join, media_namespace)."""
