"""Running a local stack: Redis, Envoy, the ext_proc server, and upstream sites, as child processes."""
