"""Operator controls: drain/undrain a site (through Redis, seen by every gateway) and the status table."""
