"""Simulated outside parties (chat platforms, file servers) served over real HTTP for tests."""
