"""The Lua filter that reads token usage inside Envoy (observability.usage_via: access_log).

Why Lua: it runs in Envoy's worker on each response chunk as it passes (`bodyChunks` never buffers or
holds one), keeps only the last few KiB, and at the end of the response finds the last `"usage": {...}`
object — in a non-stream body or in a stream's final usage chunk, wherever the chunk boundaries fell. The
counts go into dynamic metadata (`aigrid.usage`), which Envoy's access logs carry: the JSON log on stdout
and the gRPC access log stream to `aigrid serve`, batched, so the gateway's Python never sees a token
chunk. A key inside a JSON string cannot match: its quotes would be escaped.
"""

from __future__ import annotations

# Bytes of the response tail kept: a usage chunk or object is ~200 bytes; generous for cached/reasoning
# details and a trailing `data: [DONE]`.
TAIL_BYTES = 8192
NAMESPACE = "aigrid.usage"

SOURCE = (
    r"""
local TAIL = %(tail)d

local function last_usage(s)
  local at = nil
  local i = 1
  while true do
    local _, b = string.find(s, '"usage"%%s*:%%s*{', i)
    if b == nil then break end
    at = b
    i = b + 1
  end
  if at == nil then return nil, nil end
  local rest = string.sub(s, at)
  return string.match(rest, '"prompt_tokens"%%s*:%%s*(%%d+)'), string.match(rest, '"completion_tokens"%%s*:%%s*(%%d+)')
end

function envoy_on_response(handle)
  local tail = ""
  for chunk in handle:bodyChunks() do
    local n = chunk:length()
    if n > 0 then
      local start = 0
      if n > TAIL then start = n - TAIL end
      tail = tail .. chunk:getBytes(start, n - start)
      if #tail > TAIL then tail = string.sub(tail, -TAIL) end
    end
  end
  local p, c = last_usage(tail)
  if p ~= nil and c ~= nil then
    local md = handle:streamInfo():dynamicMetadata()
    md:set("%(ns)s", "prompt_tokens", tonumber(p))
    md:set("%(ns)s", "completion_tokens", tonumber(c))
  end
end
"""
    % {"tail": TAIL_BYTES, "ns": NAMESPACE}
)
