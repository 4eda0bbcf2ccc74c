"""The Redis store's claim under a ClaimPolicy: limits and fair turns in one script.

CLAIM_POLICY is CLAIM (redis_lua) with the pick in between replaced: the reap,
the promotion, the choice under the limits, the leases, the recorded starts and
the new fair passes are one script, so the check and the claim are one atomic
step for every worker and process. The decision is chalicelib/limits.py's
(Admission, fair_pick) in Lua, with the same rules and the same ties: rooms
per limit key, a held job takes nothing, stride turns by (pass, tenant name),
1/weight per turn, newcomers join at the clock.

Keys it adds (P is "{prefix}:", the store's one hash tag, so a Cluster still
sees one slot per store; nothing here is per tenant or per queue):

    P ix           string: the optional indexes this store keeps, letters of 'abc'.
                   A policy claim that needs one adds its letter; from then on every
                   script keeps it (redis_lua's index_due/index_running):
    P lt:<type>    zset 'a': running jobs of one type, score lease expiry (the queue's
                   running jobs are already l:<queue>)
    P rq:<qt>      zset 'b': due jobs of one queue and type, as r:<queue> holds them
    P rqs:<queue>  set 'b': the types with due jobs in the queue (or lately had: an
                   empty one is dropped when a claim finds it so)
    P rf:<tq><type>  zset 'c': due jobs of one tenant, queue and type
    P rfs:<queue>  set 'c': "<len>:<tenant><type>" of the same, dropped alike
    P ixb          hash letter -> ZSCAN cursor over R: an index still being filled with
                   the jobs that were due before it was kept
    P rs:<key>     zset: the starts of a rate-limited key ("type:<name>"), score the
                   start, member "<token>:<id>"; starts older than the window are pruned
    P fp / P fclock  hash tenant -> stride pass / string: the pass of the last turn
    P tb           hash: token buckets (JobStore.take_tokens), key -> "<tokens>|<micros>"

<qt> is "<len>:<queue><type>". Jobs under the same queue and type (and tenant)
fall under the same limits, so a claim reads each index from its best job on and
stops at the first one a full limit holds: jobs behind a full limit are never
scanned, however many there are. That one is recorded as a hold; the rest of
the index is left out, as Admission.full_keys allows.

Sources with due jobs are found through rqs:/rfs: of the queues asked for (of
every queue ever used when none are), so a claim costs the number of (tenant,)
type and queue groups with due work plus the jobs it takes, not the backlog.
"""

from __future__ import annotations

from chalicelib.storage.redis_lua import (
    _CLAIM_IDS,
    _CLAIM_LEASE,
    _CLAIM_REAP,
    _CLAIM_SORT,
    _PRELUDE,
    _WRITE,
)

# The policy, decoded from the last argument: l = {{key, concurrency or 0, rate count or
# 0, rate window start or 0}, ...}, t = 1 when a limit names a type, f = 1 for fair
# turns, w = {tenant = weight}, ix = the index letters this claim needs, bf = how many
# due jobs one claim may add to an index still being filled, ah = now + limits.STEP_BACK
# (starts recorded after it were recorded before the clock stepped back).
# Runs before the reap, so the hooks of this very script keep what it starts keeping.
_ENABLE = r"""
local POLICY = cjson.decode(ARGV[#ARGV])
do
  local kept = redis.call('GET', P .. 'ix') or ''
  local added = ''
  for letter in string.gmatch(POLICY.ix, '.') do
    if not string.find(kept, letter, 1, true) then added = added .. letter end
  end
  if added ~= '' then
    if string.find(added, 'a', 1, true) then
      -- Running jobs are few (leases held now): copy them at once.
      local n = redis.call('ZCARD', P .. 'L')
      for start = 0, n - 1, 1000 do
        local page = redis.call('ZRANGE', P .. 'L', start, start + 999, 'WITHSCORES')
        for i = 1, #page, 2 do
          local type_ = redis.call('HGET', jkey(page[i]), 'type')
          if type_ then redis.call('ZADD', P .. 'lt:' .. type_, page[i + 1], page[i]) end
        end
      end
    end
    -- Due jobs may be many: backfilled() copies them a part per claim.
    for letter in string.gmatch(added, '[bc]') do redis.call('HSET', P .. 'ixb', letter, '0') end
    redis.call('SET', P .. 'ix', kept .. added)
  end
end
"""

_DECIDE = r"""
-- Byte order, as Python and Redis sort strings (Lua's < follows the server's locale).
local byte = string.byte
local function bytes_before(a, b, from)
  local n = #a
  if #b < n then n = #b end
  for i = from, n do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- Claim order: -priority, then the member (run_at and created as fixed-width digits, id).
local function cand_before(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  local x, y = string.sub(a[2], 1, 40), string.sub(b[2], 1, 40)
  if x ~= y then return x < y end  -- digits of equal length: every locale agrees
  return bytes_before(a[2], b[2], 41)
end
-- Turn order: pass, then tenant name (limits.fair_pick's heap of (pass, tenant)).
local function turn_before(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return bytes_before(a[2], b[2], 1)
end
local function heap_push(h, item, before)
  h[#h + 1] = item
  local i = #h
  while i > 1 do
    local up = math.floor(i / 2)
    if not before(h[i], h[up]) then break end
    h[i], h[up] = h[up], h[i]
    i = up
  end
end
local function sift_down(h, i, before)
  local n = #h
  while true do
    local l, m = 2 * i, i
    if l <= n and before(h[l], h[m]) then m = l end
    if l + 1 <= n and before(h[l + 1], h[m]) then m = l + 1 end
    if m == i then return end
    h[i], h[m] = h[m], h[i]
    i = m
  end
end
local function heap_pop(h, before)
  local top, last = h[1], table.remove(h)
  if #h > 0 then
    h[1] = last
    sift_down(h, 1, before)
  end
  return top
end

-- Room under each limit (Admission): concurrency from what runs now (the reap is done;
-- a lease already expired counts no more), rate from the starts in (since, now].
local function running_now(key)
  if string.sub(key, 1, 6) == 'queue:' then
    return redis.call('ZCOUNT', P .. 'l:' .. string.sub(key, 7), '(' .. now, '+inf')
  end
  local lt = P .. 'lt:' .. string.sub(key, 6)
  redis.call('ZREMRANGEBYSCORE', lt, '-inf', now)
  return redis.call('ZCARD', lt)
end
local ROOM, RATED, HOLDS = {}, {}, {}
for _, l in ipairs(POLICY.l) do
  local key, conc, count, since = l[1], l[2], l[3], l[4]
  local room, kind = nil, nil
  if conc > 0 then room, kind = conc - running_now(key), 'concurrency' end
  if count > 0 then
    local starts = P .. 'rs:' .. key
    redis.call('ZREMRANGEBYSCORE', starts, '-inf', since)
    -- Starts dated ahead were recorded before the clock stepped back: they count as
    -- starting now, not until the clock is back where it was.
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', starts, '(' .. POLICY.ah, '+inf')) do
      redis.call('ZADD', starts, now, m)
    end
    local left = count - redis.call('ZCARD', starts)
    if not room or left < room then room, kind = left, 'rate' end
    RATED[key] = true
  end
  ROOM[key] = {room, kind}
  -- Full before any job was looked at: said once (job id ''), as Admission does, since
  -- the key's jobs are left out below.
  if room <= 0 then HOLDS[#HOLDS + 1] = {'', key, kind} end
end
-- Admission.admit: take room from every limit the job falls under, or record the hold.
-- A job that takes a limit's last room says so (job id ''): the rest of its jobs go unread.
local function take(key, r)
  r[1] = r[1] - 1
  if r[1] == 0 then HOLDS[#HOLDS + 1] = {'', key, r[2]} end
end
local function admit(id, queue, type_)
  local qk, tk = 'queue:' .. queue, 'type:' .. type_
  local qr, tr = ROOM[qk], ROOM[tk]
  if qr and qr[1] <= 0 then
    HOLDS[#HOLDS + 1] = {id, qk, qr[2]}
    return false
  end
  if tr and tr[1] <= 0 then
    HOLDS[#HOLDS + 1] = {id, tk, tr[2]}
    return false
  end
  if qr then take(qk, qr) end
  if tr then take(tk, tr) end
  return true
end

-- A source: one index of due jobs that share their queue and type (so their limits),
-- read in growing pages; `set`/`member` name its entry in rqs:/rfs:, dropped when empty.
local function source(key, queue, type_, set, member)
  return {key = key, queue = queue, type = type_, set = set, member = member,
    offset = 0, page = 4, buf = {}, pos = 1}
end
-- Put the source's next job on the merge heap `h`, reading a page when needed.
local function advance(h, src)
  if src.pos > #src.buf then
    if src.done then return end
    local got = redis.call('ZRANGE', src.key, src.offset, src.offset + src.page - 1, 'WITHSCORES')
    if #got == 0 then
      src.done = true
      if src.offset == 0 and src.set then redis.call('SREM', src.set, src.member) end
      return
    end
    src.offset, src.buf, src.pos = src.offset + #got / 2, got, 1
    src.page = math.min(src.page * 4, 256)
  end
  heap_push(h, {tonumber(src.buf[src.pos + 1]), src.buf[src.pos], src}, cand_before)
  src.pos = src.pos + 2
end
-- The best job of the merged sources the limits let start. A held job's source is
-- dropped: every job after it falls under the same limit, full for the rest of the claim.
-- An entry of an optional index whose job is no longer due (moved by a process that does
-- not keep the index, such as an older version) is forgotten, never leased.
local function next_admitted(h)
  while #h > 0 do
    local c = heap_pop(h, cand_before)
    local src = c[3]
    if src.set and not redis.call('ZSCORE', P .. 'R', c[2]) then
      redis.call('ZREM', src.key, c[2])
      src.offset = src.offset - 1  -- it was read already: later ranks moved down by one
      advance(h, src)
    elseif admit(string.sub(c[2], 41), src.queue, src.type) then
      advance(h, src)
      return {c[1], c[2], src.queue}
    end
  end
  return nil
end
-- Whether a limit of this queue and type was full before the claim: its jobs are left out.
local FULL = {}
for key, r in pairs(ROOM) do FULL[key] = r[1] <= 0 end
local function left_out(queue, type_)
  return FULL['queue:' .. queue] or FULL['type:' .. type_]
end
local function queues_asked()
  local out, seen = {}, {}
  for _, q in ipairs(queues or redis.call('SMEMBERS', P .. 'queues')) do
    if not seen[q] then
      seen[q] = true
      out[#out + 1] = q
    end
  end
  return out
end

-- The due jobs that were there before index `letter` was kept, a part per claim (ZSCAN
-- returns every job due throughout; jobs due since are indexed as they fall due).
local function backfilled(letter)
  local cursor = redis.call('HGET', P .. 'ixb', letter)
  if not cursor then return true end
  local seen = 0
  repeat
    local page = redis.call('ZSCAN', P .. 'R', cursor, 'COUNT', 500)
    cursor = page[1]
    local items = page[2]
    for i = 1, #items, 2 do
      local j = redis.call('HMGET', jkey(string.sub(items[i], 41)), 'queue', 'tenant', 'type')
      if j[1] then index_due(j[1], items[i + 1], items[i], j[2], j[3]) end
    end
    seen = seen + #items / 2
  until cursor == '0' or seen >= POLICY.bf
  if cursor == '0' then
    redis.call('HDEL', P .. 'ixb', letter)
    return true
  end
  redis.call('HSET', P .. 'ixb', letter, cursor)
  return false
end

-- Best first under the limits: one source per queue (per queue and type when a limit
-- names a type).
local function pick_in_order()
  flush_marks()  -- the groups this script made due (promotion, backfill) are read below
  local h = {}
  for _, q in ipairs(queues_asked()) do
    if POLICY.t == 1 then
      local set = P .. 'rqs:' .. q
      for _, t in ipairs(redis.call('SMEMBERS', set)) do
        if not left_out(q, t) then
          advance(h, source(P .. 'rq:' .. #q .. ':' .. q .. t, q, t, set, t))
        end
      end
    elseif not left_out(q, '') then
      advance(h, source(P .. 'r:' .. q, q, '', false, false))
    end
  end
  while #picked < limit do
    local c = next_admitted(h)
    if not c then break end
    picked[#picked + 1] = c
  end
end

-- A tenant's due jobs, best first (priority, run_at within the tenant): its sources
-- merged, built when its turn first comes from the {queue, member, where the type starts
-- in member} triples read from rfs: (most tenants get no turn in a given claim).
local function tenant_stream(tenant, found)
  local h = {}
  for i = 1, #found, 3 do
    local q, m = found[i], found[i + 1]
    local t = string.sub(m, found[i + 2])
    if not left_out(q, t) then
      advance(h, source(P .. 'rf:' .. tq(tenant, q) .. t, q, t, P .. 'rfs:' .. q, m))
    end
  end
  return h
end

-- limits.fair_pick: the tenant with the lowest pass takes the next turn, joining at the
-- clock when behind; each turn taken moves its pass on by 1/weight.
local function pick_fair()
  flush_marks()
  local groups, turns = {}, {}
  local tenants = {}
  for _, q in ipairs(queues_asked()) do
    for _, m in ipairs(redis.call('SMEMBERS', P .. 'rfs:' .. q)) do
      local colon = string.find(m, ':', 1, true)
      local n = tonumber(string.sub(m, 1, colon - 1))
      local tenant = string.sub(m, colon + 1, colon + n)
      local g = groups[tenant]
      if not g then
        g = {}
        groups[tenant] = g
        tenants[#tenants + 1] = tenant
      end
      g[#g + 1], g[#g + 2], g[#g + 3] = q, m, colon + n + 1
    end
  end
  if #tenants == 0 then return end
  local clock = tonumber(redis.call('GET', P .. 'fclock') or '0')
  for i = 1, #tenants, 1000 do
    local part = {unpack(tenants, i, math.min(i + 999, #tenants))}
    local passes = redis.call('HMGET', P .. 'fp', unpack(part))
    for k, tenant in ipairs(part) do
      turns[#turns + 1] = {math.max(tonumber(passes[k]) or clock, clock), tenant}
    end
  end
  for i = math.floor(#turns / 2), 1, -1 do sift_down(turns, i, turn_before) end
  local streams, moved = {}, {}
  while #turns > 0 and #picked < limit do
    local turn = heap_pop(turns, turn_before)
    local tenant = turn[2]
    local h = streams[tenant]
    if not h then
      h = tenant_stream(tenant, groups[tenant])
      streams[tenant] = h
    end
    local c = next_admitted(h)
    if c then
      picked[#picked + 1] = c
      clock = turn[1]
      moved[tenant] = turn[1] + 1 / (POLICY.w[tenant] or 1)
      heap_push(turns, {moved[tenant], tenant}, turn_before)
    end
  end
  if #picked > 0 then
    local fields = {}
    for tenant, pass in pairs(moved) do
      fields[#fields + 1] = tenant
      fields[#fields + 1] = string.format('%.17g', pass)
    end
    redis.call('HSET', P .. 'fp', unpack(fields))
    redis.call('SET', P .. 'fclock', string.format('%.17g', clock))
  end
end

if ids then
  -- Named jobs (SQS delivery): best first, each admitted or held in turn.
  table.sort(picked, cand_before)
  local admitted = {}
  for _, p in ipairs(picked) do
    if #admitted >= limit then break end
    if admit(string.sub(p[2], 41), p[3], p[4]) then admitted[#admitted + 1] = p end
  end
  picked = admitted
elseif limit > 0 then
  if POLICY.f == 1 then
    if backfilled('c') then pick_fair() end
  elseif POLICY.t ~= 1 or backfilled('b') then
    pick_in_order()
  end
end
"""

# After the leases: one start per rate-limited key of each job started.
_RECORD = r"""
for _, r in ipairs(claimed) do
  for _, key in ipairs({'queue:' .. r[4], 'type:' .. r[3]}) do
    if RATED[key] then redis.call('ZADD', P .. 'rs:' .. key, now, token .. ':' .. r[1]) end
  end
end
flush()
return {claimed, buried, HOLDS}
"""

# ARGV: CLAIM's, then the policy (JSON, see _ENABLE). Returns {claimed rows, buried
# jobs, holds as {job id, limit key, kind}}.
CLAIM_POLICY = (
    _WRITE
    + _PRELUDE
    + "\nlocal LAST = #ARGV - 1\n"
    + _ENABLE
    + _CLAIM_REAP
    + _CLAIM_IDS
    + _DECIDE
    + _CLAIM_SORT
    + _CLAIM_LEASE
    + _RECORD
)

# JobStore.take_tokens: a token bucket per key in the hash P tb ("<tokens>|<micros>"),
# limits.bucket_stamp, limits.refill and limits.take in Lua. ARGV: P, key, rate (per
# second), burst, cost, now, limits.STEP_BACK (both in micros). Returns the seconds to
# wait as a string (0 when the tokens were taken).
TAKE_TOKENS = (
    _WRITE
    + _PRELUDE
    + r"""
local key, rate, burst, cost, now = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), tonumber(ARGV[6])
local step = tonumber(ARGV[7])
local tokens, at = burst, now
local stored = redis.call('HGET', P .. 'tb', key)
if stored then
  local bar = string.find(stored, '|', 1, true)
  tokens, at = tonumber(string.sub(stored, 1, bar - 1)), tonumber(string.sub(stored, bar + 1))
end
-- Never back in time (a caller that read its clock before another's turn): the next
-- take would refill time already counted. But a stamp more than a step ahead was
-- written before the clock stepped back: refill nothing for it and go on from now.
local elapsed, stamp = (now - at) / 1e6, math.max(at, now)
if at - now > step then elapsed, stamp = 0, now end
tokens = math.min(burst, tokens + math.max(0, elapsed) * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', P .. 'tb', key, string.format('%.17g', tokens) .. '|' ..
  string.format('%.17g', stamp))
return string.format('%.17g', wait)
"""
)
