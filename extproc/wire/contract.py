"""The boundary vocabulary every layer shares: header names, inspected paths, the site-name alphabet.

One module, imported by the request parser, the gateway, the Envoy renderer, the load tester and the
tools alike, so a header renamed here is renamed everywhere (Envoy AI Gateway keeps the same kind of
module, `internalapi`). It imports nothing from the project. The Redis key layout lives beside the
report schema (`extproc.wire.loadreport.keys.RedisKeys`), the one place that writes and reads those keys.
"""

from __future__ import annotations

import re

# Set by the gateway on the request to Envoy: the site the router should send it to. Stripped from client
# requests by the rendered Envoy config's early header mutation (a client never picks its site).
SITE_HEADER = "x-aigrid-site"
# Set by the gateway: the decision's reason, for logs and the access log. Stripped from clients too.
DECISION_HEADER = "x-aigrid-decision"
# The request's SLA class (realtime | standard | batch); see the trust rules in the config.
PRIORITY_HEADER = "x-aigrid-priority"
# A client may name its conversation with this header (the gateway's default `gateway.conversation_header`);
# otherwise the gateway keys a conversation on a hash of its prompt prefix.
CONVERSATION_HEADER = "x-aigrid-conversation"
# Set by the compressor on rewritten requests: tokens before/after and the reason.
COMPRESSION_HEADER = "x-aigrid-compression"

# Set by the gateway on the request: its overhead (ms) for the client's response headers, when configured.
OVERHEAD_HEADER = "x-aigrid-overhead-ms"
# Set by the routing filter for the observing filter: a short summary of the request (model, class, site).
OBS_HEADER = "x-aigrid-obs"

# POST paths whose JSON body the gateway understands (features, compression).
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
RESPONSES_PATH = "/v1/responses"
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"
INSPECTED_PATHS = frozenset({CHAT_PATH, COMPLETIONS_PATH, RESPONSES_PATH})
# POST paths that run inference on a GPU: routed on load and counted in flight. Embeddings are short and
# not compressible, so their body is never buffered. GET /v1/models is answered by the gateway itself.
INFERENCE_PATHS = INSPECTED_PATHS | {EMBEDDINGS_PATH}

# Site names end up in Redis keys, Envoy cluster names and a routing header: a safe alphabet.
SITE_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")
