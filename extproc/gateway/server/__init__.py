"""The ext_proc gRPC server (`aigrid serve`)."""
