"""The gateway (`aigrid serve` and the operator's commands): request understanding, the load map, routing,
compression, the response side, the Envoy config renderer and the gRPC server. It imports `extproc.wire`
and nothing of the agent or the tools."""
