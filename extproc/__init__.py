"""AI Grid gateway."""
