"""The Lua filter that reads token usage inside Envoy (observability.usage_via: access_log).

Why Lua: it runs in Envoy's worker on each response chunk as it passes (`bodyChunks` never buffers or
holds one), keeps only the last few KiB, and at the end of the response finds the last `"usage": {...}`
object — in a non-stream body or in a stream's final usage chunk, wherever the chunk boundaries fell. The
counts go into dynamic metadata (`aigrid.usage`), which Envoy's access logs carry: the JSON log on stdout
and the gRPC access log stream to `aigrid serve`, batched, so the gateway's Python never sees a token
chunk. A key inside a JSON string cannot match: its quotes would be escaped.

When the routing filter asked a stream for usage on the client's behalf (`x-aigrid-obs` says so), the same
script removes the usage-only chunk (`"choices": []` with a `usage` object) as it passes: complete events
go on at once; an event split across chunks is held until its end arrives and goes out whole with the next
chunk. A stream that ends inside an event loses that unfinished event, which an SSE client would discard
anyway (the spec dispatches an event only at its blank line).
"""

from __future__ import annotations

from extproc.gateway.observe.request import USAGE_NAMESPACE
from extproc.gateway.observe.usage import ID_SEARCH_BYTES
from extproc.wire.contract import OBS_HEADER

# Bytes of the response tail kept: a usage chunk or object is ~200 bytes; generous for cached/reasoning
# details and a trailing `data: [DONE]`.
TAIL_BYTES = 8192
NAMESPACE = USAGE_NAMESPACE

SOURCE = (
    r"""
local TAIL = %(tail)d
local HEAD = %(head)d
local MAX_PENDING = 1048576

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

-- End (inclusive, 1-based) of the next SSE event starting at i, or nil when it has not ended yet.
local function event_end(s, i)
  local a1, b1 = string.find(s, "\n\n", i, true)
  local a2, b2 = string.find(s, "\r\n\r\n", i, true)
  if b1 == nil then return b2 end
  if b2 ~= nil and a2 < a1 then return b2 end
  return b1
end

-- Complete events of buf without the usage-only chunk(s); the unfinished rest; how many were cut.
local function strip_usage(buf)
  local out = {}
  local i, cut = 1, 0
  while true do
    local e = event_end(buf, i)
    if e == nil then break end
    local ev = string.sub(buf, i, e)
    if string.find(ev, '"choices"%%s*:%%s*%%[%%s*%%]') and string.find(ev, '"usage"%%s*:%%s*{') then
      cut = cut + 1
    else
      out[#out + 1] = ev
    end
    i = e + 1
  end
  return table.concat(out), string.sub(buf, i), cut
end

-- One chunk of a stream being stripped: what to pass on now, what to hold for the next chunk.
function aigrid_strip_step(pending, bytes)
  local kept, rest, cut = strip_usage(pending .. bytes)
  if #rest > MAX_PENDING then kept, rest = kept .. rest, "" end
  return kept, rest, cut
end

-- The usage in a response tail: prompt and completion token counts (strings), or nils.
aigrid_last_usage = last_usage

-- The last JSON "model" string value in s, or nil (bounded: model names are short).
function aigrid_last_model(s)
  local found = nil
  local i = 1
  while true do
    local _, b, m = string.find(s, '"model"%%s*:%%s*"([^"\\]*)"', i)
    if b == nil then break end
    if #m <= 256 then found = m end
    i = b + 1
  end
  return found
end

function envoy_on_request(handle)
  -- The routing filter asked this stream for usage on the client's behalf: strip it on the way back.
  local v = handle:headers():get("%(obs)s")
  if v ~= nil and string.match(v, "^1;[^;]*;[^;]*;1%%d;") then
    handle:streamInfo():dynamicMetadata():set("%(ns)s", "strip", true)
  end
  -- A Responses API request with a conversation key (a sixth field): read the response's id.
  if v ~= nil and string.match(v, "^1;[^;]*;[^;]*;%%d%%d;[^;]*;.") then
    handle:streamInfo():dynamicMetadata():set("%(ns)s", "chain", true)
  end
end

function envoy_on_response(handle)
  local state = handle:streamInfo():dynamicMetadata():get("%(ns)s")
  local strip = state ~= nil and state["strip"] == true
  if strip then
    local ct = handle:headers():get("content-type") or ""
    strip = string.find(ct, "text/event-stream", 1, true) ~= nil
  end
  local chain = state ~= nil and state["chain"] == true
  local head = ""
  local tail, pending, cut = "", "", 0
  local parts, first, last, size = {}, 1, 0, 0
  for chunk in handle:bodyChunks() do
    local n = chunk:length()
    if chain and n > 0 and #head < HEAD then
      head = head .. chunk:getBytes(0, math.min(n, HEAD - #head))
    end
    if strip and (n > 0 or #pending > 0) then
      -- Only complete events go on; an event split across chunks goes out whole with the next one.
      local bytes = chunk:getBytes(0, n)
      local kept, k
      kept, pending, k = aigrid_strip_step(pending, bytes)
      cut = cut + k
      tail = string.sub(tail .. bytes, -TAIL)
      if kept ~= bytes then chunk:setBytes(kept) end
    elseif n > 0 then
      -- Keep the last pieces, not one growing string: no per-chunk copy of the whole tail.
      local start = 0
      if n > TAIL then start = n - TAIL end
      local b = chunk:getBytes(start, n - start)
      last = last + 1
      parts[last] = b
      size = size + #b
      while size - #parts[first] >= TAIL do
        size = size - #parts[first]
        parts[first] = nil
        first = first + 1
      end
    end
  end
  if not strip then tail = table.concat(parts, "", first, last) end
  -- Fetched again: objects from before the loop do not survive its yields.
  local md = handle:streamInfo():dynamicMetadata()
  local p, c = last_usage(tail)
  if p ~= nil and c ~= nil then
    md:set("%(ns)s", "prompt_tokens", tonumber(p))
    md:set("%(ns)s", "completion_tokens", tonumber(c))
    -- gen_ai.response.model: the last "model" in the tail (a stream's usage chunk names it; a long
    -- non-stream body's may lie before the tail, and is then unknown).
    local m = aigrid_last_model(tail)
    if m ~= nil then md:set("%(ns)s", "model", m) end
  end
  if cut > 0 then md:set("%(ns)s", "stripped", cut) end
  if chain then
    local rid = string.match(head, '"id"%%s*:%%s*"(resp_[%%w_%%-]+)"')
    if rid ~= nil and #rid <= 205 then md:set("%(ns)s", "response_id", rid) end
  end
end
"""
    % {"tail": TAIL_BYTES, "ns": NAMESPACE, "obs": OBS_HEADER, "head": ID_SEARCH_BYTES}
)
