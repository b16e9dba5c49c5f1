"""Shared helpers for the deployment tests: paths, rendering with the real kubectl, loading scripts."""
