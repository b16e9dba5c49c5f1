"""Redis connections: the settings (`settings.py`, part of aigrid.yaml and of the agent's config) and the
client builder for the URL forms (`client.py`)."""
