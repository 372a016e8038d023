"""Shared fixtures for the test suite. Area-specific fixtures live beside their tests."""
