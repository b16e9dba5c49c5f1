"""What crosses a boundary between the gateway, the agents and the tools: the header and path vocabulary
(`contract.py`), the load report's schema, codec and Redis key layout (`loadreport/`), the Redis
connection settings and client builder (`redisconn/`), and the site roles every site model shares
(`sites.py`). It imports nothing else of the project; everything else may import it."""
