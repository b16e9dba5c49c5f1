"""`aigrid twin`: a discrete-event, virtual-time twin of clients → gateways → sites that runs the
project's real routing, load-map and compression decisions against the simulator's engine (a tool)."""
