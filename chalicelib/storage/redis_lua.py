"""The Redis store's server-side scripts: every transition is one Lua script.

A script runs atomically, so a transition, its counters, its attempt record and
its wake-up (PUBLISH) happen together or not at all. Redis does not undo the
writes of a script that fails half way, so no script raises once it has
written: its commands take only values the Python side checked or the script
itself read. Each starts with a shebang (Redis 7), so a server out of memory
refuses it whole before it runs instead of failing mid-way.

Keys (P is "{prefix}:", the braces a Cluster hash tag: every key of one store
lives in one slot, so every script touches one slot):

    P j:<id>       hash: the job (times as integer microseconds since the epoch)
    P h:<id>       list: its attempt history (storage/history.py entries), last N
    P idem         hash: "<len>:<tenant><key>" -> job id
    P queues       set: every queue ever used
    P qd           zset: queue -> the run_at of its oldest waiting job (queued/retrying);
                   absent when none waits. Moved by the script that changes the queue's
                   w: (flush_waits), so oldest_due reads one range or a few scores, never
                   a walk over queues (a tenant can make any number of them)
    P qdt:<tenant> zset: the same over one tenant's jobs (its wt: sets)
    P w:<queue>    zset: waiting jobs (queued/retrying), score run_at
    P W            zset: the same for every queue (when is work next due)
    P wt:<tq>      zset: the same for one tenant's jobs of one queue
    P S            zset: waiting jobs of every queue not yet due when last seen,
                   score run_at (claims promote the due ones to r: and R)
    P r:<queue>    zset: due jobs, score -priority, member run_at|created|id
                   (fixed-width digits, so equal scores sort by run_at, created, id)
    P R            zset: the same for every queue (claims of any queue read it)
    P l:<queue>    zset: running jobs, score lease expiry
    P L            zset: the same for every queue (the reap reads it)
    P fin          zset: finished jobs (succeeded/dead/cancelled), score finished_at
    P c / P ct:<tenant>   zset (score 0): created|id, for listing in order
    P tcounts      hash: "<tq><state>" -> jobs of one tenant and queue in that state
    P tc:<tenant>  hash: "<len>:<queue><state>" -> the same for one tenant (its dashboard
                   reads only its own, however many queues other tenants use)
    P tp:<minute> / P tpm   hash "<tq>s|f" -> attempts that ended in that minute /
                   zset of the minutes kept (JobStore.throughput)
    P tt:<minute>:<tenant> / P tn:<minute>   hash "<len>:<queue>s|f": the same for one
                   tenant (its chart reads its own, however many queues others use) /
                   set of the tenants that have one (the purge of a minute drops them)
    P d:<id> / P dj:<job>   hash: a webhook delivery / list: a job's delivery ids, in
                   write order (listed and pruned by created_at, then id)
    P dp           zset: pending deliveries, score next_at
    P dc           hash: deliveries per counted state (pending, failed)
    P counters     hash: "<len>:<queue><len>:<type><event>" -> total
    P ctot         hash: "<len>:<type><event>" -> the same summed over every queue
    P qv           zset: queue -> minus its jobs ever enqueued (ZRANGE from 0 is the
                   busiest first, ties by name): the ranking of JobStore.queue_totals
    P qc / P st    hash: "<len>:<queue><state>" / state -> jobs in that state, summed
                   over tenants / over every queue
    P qt           '2' once qv, ctot, qc, st, qd and qdt: hold everything (QT_INSTALL)
    P te           hash: tenant -> its invalidation epoch (JobStore.cache_epoch; absent
                   reads 0). A store made before it keeps its old `P epoch`, unused.
    P wk / P wb    hash worker -> beat JSON / zset worker -> last beat
    P wake         the pub/sub channel idle workers listen on
    P born         a random token set once (SET NX, redis_store._mark_birth): gone or
                   changed means the store was emptied under a running process
    P ix, lt:, rq:, rf:, rs:, fp, tb ...   claims under a policy (limits, fair turns) and
                   token buckets: see redis_limits_lua.py. The indexes among them are
                   kept (by index_due/index_running below) only once a policy needs them.

<tq> is "<len>:<tenant><len>:<queue>": lengths keep any two names apart.
Times and other big numbers cross as strings: Lua numbers are doubles and
tostring() would print 1.9e+15, so scripts only compare them (tonumber), never
format them; only small counts (attempts, counter deltas) are computed in Lua.
"""

from __future__ import annotations

# A job's fields as the scripts read them (redis_store._FIELDS, in the same order).
_JOB_FIELDS = r"""{'id', 'tenant', 'type', 'queue', 'priority', 'payload', 'state', 'attempts',
  'max_attempts', 'run_at', 'lease_token', 'lease_expires_at', 'result', 'last_error',
  'idempotency_key', 'created_at', 'updated_at', 'started_at', 'finished_at'}"""

# Lua shared by every script. ARGV[1] is always P. Scripts that may end attempts set
# MINUTE (the throughput minute of `now`); those that may write a webhook delivery
# set IDBASE (24 random hex digits: delivery ids are IDBASE and a counter).
_PRELUDE = (
    r"""
local P = ARGV[1]
local MINUTE, IDBASE, NDELIVERIES = false, false, 0
-- Counter changes are summed here and written once per field by flush(), which
-- every writing script calls before it returns: a batch of 100 jobs of one queue
-- costs a few HINCRBYs, not hundreds.
local DELTAS = {}
local MARKS = {}  -- set key -> {member = true}: index sets flush() adds to, once each
local function delta(key, field, n)
  local t = DELTAS[key]
  if not t then
    t = {}
    DELTAS[key] = t
  end
  t[field] = (t[field] or 0) + n
end
local function flush_marks()
  for key, members in pairs(MARKS) do
    local list = {}
    for m in pairs(members) do list[#list + 1] = m end
    -- In chunks: unpack() takes at most 8,000 (a batch may hold 10,000 queues).
    for i = 1, #list, 1000 do
      redis.call('SADD', key, unpack(list, i, math.min(i + 999, #list)))
    end
  end
  MARKS = {}
end
-- A script that adds many jobs defers its index ZADDs here (ZQ set) and flush() writes
-- each key's members in a few calls: one ZADD per key and 500 members, not one per job
-- and key. Scripts that leave ZQ nil add at once.
local ZQ = nil
local function zadd(key, score, member)
  if ZQ then
    local t = ZQ[key]
    if not t then
      t = {}
      ZQ[key] = t
    end
    t[#t + 1] = score
    t[#t + 1] = member
  else
    redis.call('ZADD', key, score, member)
  end
end
local function flush_z()
  if not ZQ then return end
  for key, t in pairs(ZQ) do
    for i = 1, #t, 1000 do
      redis.call('ZADD', key, unpack(t, i, math.min(i + 999, #t)))
    end
  end
  ZQ = {}
end
-- The (tenant, queue) pairs whose waiting jobs this script changed: flush() sets their
-- entries in qd and qdt:<tenant> (the oldest waiting run_at) once each, after the
-- deferred ZADDs. {tenant, queue, lowest run_at added, whether one left}: a pair only
-- added to takes ZADD LT (the new oldest is the lower of the two); one a job left is
-- read back from its w: and wt: (what left may have been the oldest).
local function tq(tenant, queue) return #tenant .. ':' .. tenant .. #queue .. ':' .. queue end
local WAITS = {}
local function waits(tenant, queue, run_at)
  local key = tq(tenant, queue)
  local t = WAITS[key]
  if not t then
    t = {tenant, queue, false, false}
    WAITS[key] = t
  end
  if not run_at then
    t[4] = true
  elseif not t[3] or tonumber(run_at) < tonumber(t[3]) then
    t[3] = run_at
  end
end
local function oldest_into(zset, queue, from)
  local first = redis.call('ZRANGE', from, 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('ZADD', zset, first[2], queue)
  else
    redis.call('ZREM', zset, queue)
  end
end
local function flush_waits()
  for key, t in pairs(WAITS) do
    local tenant, queue = t[1], t[2]
    if t[4] then
      oldest_into(P .. 'qd', queue, P .. 'w:' .. queue)
      oldest_into(P .. 'qdt:' .. tenant, queue, P .. 'wt:' .. key)
    else
      redis.call('ZADD', P .. 'qd', 'LT', t[3], queue)
      redis.call('ZADD', P .. 'qdt:' .. tenant, 'LT', t[3], queue)
    end
  end
  WAITS = {}
end
local function flush()
  flush_z()
  flush_waits()
  local qv = P .. 'qv'
  for key, t in pairs(DELTAS) do
    for field, n in pairs(t) do
      if key == qv then
        redis.call('ZINCRBY', key, n, field)  -- 0 too: a queue is known from its first job
      elseif n ~= 0 then
        redis.call('HINCRBY', key, field, n)
      end
    end
  end
  DELTAS = {}
  flush_marks()
  if MINUTE then redis.call('ZADD', P .. 'tpm', MINUTE, MINUTE) end
end
local FIELDS = """
    + _JOB_FIELDS
    + r"""
local DFIELDS = {'id', 'job_id', 'tenant', 'url', 'event', 'state', 'attempts', 'next_at',
  'created_at', 'lease_token', 'lease_expires_at', 'finished_at', 'last_error'}
local function jkey(id) return P .. 'j:' .. id end
-- A job's deliveries as {created_at (a number), id, ...}: oldest first, ties by id.
local function by_age(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end
local function pad(s) return string.rep('0', 20 - #s) .. s end
local function rmember(run_at, created, id) return pad(run_at) .. pad(created) .. id end
local function row(id) return redis.call('HMGET', jkey(id), unpack(FIELDS)) end
local function opt(s) if s == '-' then return nil end return string.sub(s, 2) end
-- Optional indexes for claims under a policy (storage/redis_limits_lua.py): kept only
-- once a policy claim has asked for them (P ix), so a store that never sees a policy
-- pays one GET per script. 'a': running jobs per type; 'b': due jobs per queue and
-- type; 'c': due jobs per tenant, queue and type.
local IXA, IXB, IXC = nil, false, false
local function indexes()
  if IXA == nil then
    local kept = redis.call('GET', P .. 'ix') or ''
    IXA = string.find(kept, 'a', 1, true) ~= nil
    IXB = string.find(kept, 'b', 1, true) ~= nil
    IXC = string.find(kept, 'c', 1, true) ~= nil
  end
end
local function mark(key, member)
  local t = MARKS[key]
  if not t then
    t = {}
    MARKS[key] = t
  end
  t[member] = true
end
local function index_due(queue, score, member, tenant, type_)
  indexes()
  if IXB then
    zadd(P .. 'rq:' .. #queue .. ':' .. queue .. type_, score, member)
    mark(P .. 'rqs:' .. queue, type_)
  end
  if IXC then
    zadd(P .. 'rf:' .. tq(tenant, queue) .. type_, score, member)
    mark(P .. 'rfs:' .. queue, #tenant .. ':' .. tenant .. type_)
  end
end
local function unindex_due(queue, member, tenant, type_)
  indexes()
  if IXB then redis.call('ZREM', P .. 'rq:' .. #queue .. ':' .. queue .. type_, member) end
  if IXC then redis.call('ZREM', P .. 'rf:' .. tq(tenant, queue) .. type_, member) end
end
local function index_running(type_, id, expires)
  indexes()
  if IXA then redis.call('ZADD', P .. 'lt:' .. type_, expires, id) end
end
local function unindex_running(type_, id)
  indexes()
  if IXA then redis.call('ZREM', P .. 'lt:' .. type_, id) end
end
-- Every count and counter also goes to the scrape's summaries (qc and st, ctot and qv)
-- in the same script, so queue_totals reads the named queues and the totals only.
local function count(tenant, queue, state, n)
  delta(P .. 'tcounts', tq(tenant, queue) .. state, n)
  delta(P .. 'tc:' .. tenant, #queue .. ':' .. queue .. state, n)
  delta(P .. 'qc', #queue .. ':' .. queue .. state, n)
  delta(P .. 'st', state, n)
end
-- count() for a job whose hash lost its tenant or queue (edited by hand): the names
-- it has (st needs none, qc the queue); what is keyed by a missing name cannot be found
local function count_known(tenant, queue, state, n)
  if tenant and queue then return count(tenant, queue, state, n) end
  if queue then delta(P .. 'qc', #queue .. ':' .. queue .. state, n) end
  delta(P .. 'st', state, n)
end
-- The name a count field begins with, as tq and count write it (<length>:<name><rest>);
-- nil for a field not in that shape.
local function named_by(field)
  local n, rest = string.match(field, '^(%d+):(.*)$')
  if n then return string.sub(rest, 1, tonumber(n)) end
  return nil
end
-- The tenant of a job whose hash lost its tenant field (edited by hand): the one whose
-- listing set (ct:<tenant>) holds it, found among the tenants tcounts names (it keeps
-- zeros: every tenant that ever had a job). Only damaged hashes pay for the search;
-- with the tenant found, its counts move as the claims and purges that meet it move
-- the job (else `spool jobs`, the dashboard and the tenant's backlog cap counted it
-- queued or running for good, after it was buried dead and purged).
local function owner_of(id, tenant, created)
  if tenant or not created then return tenant end
  local member, seen = pad(created) .. id, {}
  for _, field in ipairs(redis.call('HKEYS', P .. 'tcounts')) do
    local name = named_by(field)
    if name and not seen[name] then
      seen[name] = true
      if redis.call('ZSCORE', P .. 'ct:' .. name, member) then return name end
    end
  end
  return nil
end
-- The queue of a job whose hash lost its queue field: the one of its tenant's queues
-- (tc:<tenant>) whose waiting or running set holds it. Kept in the hash's own
-- `counted_queue` (no reader's field: the record stays unreadable, as it is) so the
-- purge that deletes the job later names the same counts. Damaged hashes only.
local function queue_of(id, tenant, queue)
  if queue or not tenant then return queue end
  for _, field in ipairs(redis.call('HKEYS', P .. 'tc:' .. tenant)) do
    local name = named_by(field)
    if name and (redis.call('ZSCORE', P .. 'w:' .. name, id)
      or redis.call('ZSCORE', P .. 'l:' .. name, id)) then
      redis.call('HSET', jkey(id), 'counted_queue', name)
      return name
    end
  end
  return nil
end
local function bump(tenant, queue, type_, event)
  delta(P .. 'counters', #queue .. ':' .. queue .. #type_ .. ':' .. type_ .. event, 1)
  delta(P .. 'ctot', #type_ .. ':' .. type_ .. event, 1)
  if event == 'enqueued' then delta(P .. 'qv', queue, -1) end  -- every queue's first
  if event == 'succeeded' or event == 'failed' then
    local which = 'f'
    if event == 'succeeded' then which = 's' end
    delta(P .. 'tp:' .. MINUTE, tq(tenant, queue) .. which, 1)
    delta(P .. 'tt:' .. MINUTE .. ':' .. tenant, #queue .. ':' .. queue .. which, 1)
    mark(P .. 'tn:' .. MINUTE, tenant)
  end
end
-- A due job: in its queue's ready set and in the one of every queue (claims of any
-- queue read R, so their cost does not grow with the number of queues ever used).
local function ready(queue, score, member, tenant, type_)
  zadd(P .. 'r:' .. queue, score, member)
  zadd(P .. 'R', score, member)
  index_due(queue, score, member, tenant, type_)
end
local function unready(queue, member, tenant, type_)
  redis.call('ZREM', P .. 'r:' .. queue, member)
  redis.call('ZREM', P .. 'R', member)
  unindex_due(queue, member, tenant, type_)
end
-- A job leaves the waiting sets (its queue's, every queue's, its tenant's); flush()
-- then moves the queue's entries in qd and qdt:<tenant>.
local function unwait(tenant, queue, id)
  redis.call('ZREM', P .. 'w:' .. queue, id)
  redis.call('ZREM', P .. 'W', id)
  redis.call('ZREM', P .. 'wt:' .. tq(tenant, queue), id)
  waits(tenant, queue, false)
end
-- unwait() for a job whose hash lost its tenant or queue: the sets it can name
local function unwait_known(tenant, queue, id)
  if tenant and queue then return unwait(tenant, queue, id) end
  if queue then redis.call('ZREM', P .. 'w:' .. queue, id) end
  redis.call('ZREM', P .. 'W', id)
end
local function wait_at(id, tenant, queue, prio, run_at, created, now, type_)
  zadd(P .. 'w:' .. queue, run_at, id)
  zadd(P .. 'W', run_at, id)
  zadd(P .. 'wt:' .. tq(tenant, queue), run_at, id)
  waits(tenant, queue, run_at)
  if tonumber(run_at) <= tonumber(now) then
    ready(queue, -tonumber(prio), rmember(run_at, created, id), tenant, type_)
  else
    zadd(P .. 'S', run_at, id)
  end
end
local function stop_waiting(id, tenant, queue, run_at, created, type_)
  unwait(tenant, queue, id)
  redis.call('ZREM', P .. 'S', id)
  unready(queue, rmember(run_at, created, id), tenant, type_)
end
local function record(id, entry, keep)
  local hkey = P .. 'h:' .. id
  redis.call('RPUSH', hkey, entry)
  redis.call('LTRIM', hkey, -tonumber(keep), -1)
end
-- The webhook delivery of a terminal transition, when the job has a callback URL.
local function outbox(id, tenant, state, now, url)
  if not url then return end
  NDELIVERIES = NDELIVERIES + 1
  local did = 'msg_' .. IDBASE .. string.format('%08x', NDELIVERIES)
  redis.call('HSET', P .. 'd:' .. did, 'id', did, 'job_id', id, 'tenant', tenant, 'url', url,
    'event', 'job.' .. state, 'state', 'pending', 'attempts', '0', 'next_at', now,
    'created_at', now)
  redis.call('RPUSH', P .. 'dj:' .. id, did)
  redis.call('ZADD', P .. 'dp', now, did)
  redis.call('HINCRBY', P .. 'dc', 'pending', 1)
  -- The job keeps its newest KEPT_FINISHED finished deliveries (by created_at, ties by
  -- id: by_age); pending ones all stay.
  local dj = P .. 'dj:' .. id
  local dids = redis.call('LRANGE', dj, 0, -1)
  local finished = {}
  for _, fid in ipairs(dids) do
    local d = redis.call('HMGET', P .. 'd:' .. fid, 'state', 'created_at')
    if d[1] ~= 'pending' then finished[#finished + 1] = {tonumber(d[2]), fid, d[1]} end
  end
  if #finished <= KEPT_FINISHED then return end
  table.sort(finished, by_age)
  local dropped = {}
  for i = 1, #finished - KEPT_FINISHED do
    local gone = finished[i]
    dropped[gone[2]] = true
    if gone[3] == 'failed' then redis.call('HINCRBY', P .. 'dc', 'failed', -1) end
    redis.call('DEL', P .. 'd:' .. gone[2])
  end
  local kept = {}
  for _, kid in ipairs(dids) do
    if not dropped[kid] then kept[#kept + 1] = kid end
  end
  redis.call('DEL', dj)
  for i = 1, #kept, 1000 do
    redis.call('RPUSH', dj, unpack(kept, i, math.min(i + 999, #kept)))
  end
end
-- Delete a finished job with everything kept beside it.
local function delete_job(id)
  local jk = jkey(id)
  local j = redis.call('HMGET', jk, 'tenant', 'idempotency_key', 'queue', 'state', 'created_at',
    'counted_queue')
  j[1] = owner_of(id, j[1], j[5])
  j[3] = j[3] or j[6]  -- a queue a claim found for a hash that lost it (queue_of)
  redis.call('ZREM', P .. 'fin', id)
  for _, did in ipairs(redis.call('LRANGE', P .. 'dj:' .. id, 0, -1)) do
    local state = redis.call('HGET', P .. 'd:' .. did, 'state')
    if state == 'pending' or state == 'failed' then redis.call('HINCRBY', P .. 'dc', state, -1) end
    redis.call('ZREM', P .. 'dp', did)
    redis.call('DEL', P .. 'd:' .. did)
  end
  redis.call('DEL', jk, P .. 'h:' .. id, P .. 'dj:' .. id)
  -- Its hash gone (evicted by an allkeys-* policy, deleted by hand): what is keyed by
  -- the id went above; its tenant, key and queue are unknown, so nothing more can.
  if not j[4] then return nil end
  -- A hash that lost its tenant, queue or created_at (buried by a claim, then listed
  -- in fin): what those name cannot be found; the rest goes (the script failed on it)
  if j[2] and j[1] then
    local field = #j[1] .. ':' .. j[1] .. j[2]
    if redis.call('HGET', P .. 'idem', field) == id then redis.call('HDEL', P .. 'idem', field) end
  end
  if j[5] then
    local member = pad(j[5]) .. id
    redis.call('ZREM', P .. 'c', member)
    if j[1] then redis.call('ZREM', P .. 'ct:' .. j[1], member) end
  end
  count_known(j[1], j[3], j[4], -1)
  return j[1]
end

-- What is wrong with the job's hash, or nil: CANCEL and REDRIVE refuse it before they
-- write (a script is not rolled back, and the store's read before it can be outrun by a
-- hand edit). The fields row_to_job needs: names present, numbers digits only.
local SOUND_NAMES = {'tenant', 'type', 'queue'}
local SOUND_NUMBERS = {'priority', 'attempts', 'max_attempts', 'run_at', 'created_at',
  'updated_at'}
local SOUND_OPTIONAL = {'lease_expires_at', 'started_at', 'finished_at'}
local function digits(v) return string.find(v, '^%s*%-?%d+%s*$') ~= nil end
local function unsound(id)
  local jk = jkey(id)
  local v = redis.call('HMGET', jk, unpack(SOUND_NAMES))
  for i, name in ipairs(SOUND_NAMES) do
    if not v[i] then return 'its hash lacks its ' .. name .. ' field' end
  end
  v = redis.call('HMGET', jk, unpack(SOUND_NUMBERS))
  for i, name in ipairs(SOUND_NUMBERS) do
    if not (v[i] and digits(v[i])) then return 'its ' .. name .. ' is missing or no number' end
  end
  v = redis.call('HMGET', jk, unpack(SOUND_OPTIONAL))
  for i, name in ipairs(SOUND_OPTIONAL) do
    if v[i] and not digits(v[i]) then return 'its ' .. name .. ' is no number' end
  end
  return nil
end

-- JobStore.cache_epoch(tenant): each tenant whose jobs a script changed, bumped once
-- when it ends (a record without a tenant names none).
local function bump_epochs(tenants)
  for tenant in pairs(tenants) do redis.call('HINCRBY', P .. 'te', tenant, 1) end
end
"""
)


def with_kept(script: str, kept: int) -> str:
    """A script with the store's SPOOL_WEBHOOK_HISTORY spliced in for KEPT_FINISHED: a
    literal, as the Lua chunk already holds many locals (each store registers its own
    scripts, so two stores that keep different numbers each run theirs)."""
    return script.replace("KEPT_FINISHED", str(int(kept)))


# The tenant's waiting jobs (queued and retrying) from its kept counts: the hash
# tc:<tenant>, fields <len>:<queue><state> (count() in the prelude).
_WAITING_OF = r"""
local function waiting_of(tenant)
  local all = redis.call('HGETALL', P .. 'tc:' .. tenant)
  local n = 0
  for i = 1, #all, 2 do
    local f = all[i]
    local c = string.find(f, ':', 1, true)
    local state = string.sub(f, c + 1 + tonumber(string.sub(f, 1, c - 1)))
    if state == 'queued' or state == 'retrying' then n = n + tonumber(all[i + 1]) end
  end
  return n
end
"""

_WRITE = "#!lua\n"
_READ = READ_SHEBANG = "#!lua flags=no-writes\n"  # run as EVALSHA_RO (redis_store.Script)
# Scripts that only delete: a server out of memory still runs them, so an operator can
# free room with `spool purge` / the dead letters' purge instead of by hand.
_FREE = "#!lua flags=allow-oom\n"

# ARGV: P, now, then the jobs as one JSON array (one decode beats ten arguments a job:
# the client packed each argument on its own), each [id, tenant, type, queue, priority,
# payload, max_attempts, run_at, key, callback url], every value a string (each optional
# one '-' or '+value'). Keys are unique within the batch (the Python side resolves
# repeats). Returns {flags, rows}: per job '1' (stored) or '0' (its key was held), and
# for each '0' in order the job that already holds the key: its callback URL (nil when
# it has none), then its row.
# With a backlog cap, ARGV[4..6] are its tenant, its most and its more (base.Backlog):
# the jobs the batch would create, counted first, must fit beside the tenant's waiting
# ones, else nothing is written and the answer is {'!', {waiting, fresh}}.
ADD = (
    _WRITE
    + _PRELUDE
    + _WAITING_OF
    + r"""
local now = ARGV[2]
local jobs = cjson.decode(ARGV[3])
local flags, rows = {}, {}
local created = 0
ZQ = {}
if ARGV[4] then
  local fresh = 0
  for i = 1, #jobs do
    local j = jobs[i]
    local key, held = opt(j[9]), nil
    if key then
      held = redis.call('HGET', P .. 'idem', #j[2] .. ':' .. j[2] .. key)
      if held and redis.call('EXISTS', jkey(held)) == 0 then held = nil end
    end
    if not held then fresh = fresh + 1 end
  end
  local waiting = waiting_of(ARGV[4])
  local jobs_in = fresh + tonumber(ARGV[6])
  if jobs_in > 0 and waiting + jobs_in > tonumber(ARGV[5]) then
    return {'!', {tostring(waiting), tostring(fresh)}}
  end
end
for i = 1, #jobs do
  local j = jobs[i]
  local id, tenant, type_, queue = j[1], j[2], j[3], j[4]
  local prio, payload, max_attempts, run_at = j[5], j[6], j[7], j[8]
  local key, callback = opt(j[9]), opt(j[10])
  local existing = nil
  if key then
    existing = redis.call('HGET', P .. 'idem', #tenant .. ':' .. tenant .. key)
    if existing and redis.call('EXISTS', jkey(existing)) == 0 then existing = nil end
  end
  if existing then
    flags[i] = '0'
    rows[#rows + 1] = redis.call('HMGET', jkey(existing), 'callback_url', unpack(FIELDS))
  else
    local fields = {'id', id, 'tenant', tenant, 'type', type_, 'queue', queue,
      'priority', prio, 'payload', payload, 'state', 'queued', 'attempts', '0',
      'max_attempts', max_attempts, 'run_at', run_at, 'created_at', now, 'updated_at', now}
    if key then
      fields[#fields + 1] = 'idempotency_key'
      fields[#fields + 1] = key
      redis.call('HSET', P .. 'idem', #tenant .. ':' .. tenant .. key, id)
    end
    if callback then
      fields[#fields + 1] = 'callback_url'
      fields[#fields + 1] = callback
    end
    redis.call('HSET', jkey(id), unpack(fields))
    local member = pad(now) .. id
    zadd(P .. 'c', 0, member)
    zadd(P .. 'ct:' .. tenant, 0, member)
    mark(P .. 'queues', queue)
    wait_at(id, tenant, queue, prio, run_at, now, now, type_)
    count(tenant, queue, 'queued', 1)
    bump(tenant, queue, type_, 'enqueued')
    created = created + 1
    flags[i] = '1'
  end
end
flush()
if created > 0 then redis.call('PUBLISH', P .. 'wake', '') end
return {table.concat(flags), rows}
"""
)

# Reap expired leases (every queue), promote due jobs, then lease the best.
# ARGV: P, now, minute, idbase, expires, token, worker (JSON), lease-expired error
# (JSON), keep, limit, unstarted ('1': leased unstarted until START, kept in the job's
# 'unstarted' field as the lease token; '0': started),
# queue filter ('*' for every queue, else '=', a count and the names), ids ('*' for
# none, else '=' and the ids, up to ARGV[LAST]). Returns {claimed
# rows, buried jobs}. The parts are shared with the claim under a policy
# (redis_limits_lua.CLAIM_POLICY), which passes one more argument after the ids.
_CLAIM_REAP = r"""
local now = ARGV[2]
MINUTE, IDBASE = ARGV[3], ARGV[4]
local expires, token, worker = ARGV[5], ARGV[6], ARGV[7]
local errjson, keep, limit = ARGV[8], ARGV[9], tonumber(ARGV[10])
local nnow = tonumber(now)
local unstarted = ARGV[11]
local pos = 12
local queues = nil
if ARGV[pos] == '*' then
  pos = pos + 1
else
  local k = tonumber(ARGV[pos + 1])
  queues = {}
  for i = 1, k do queues[i] = ARGV[pos + 1 + i] end
  pos = pos + 2 + k
end
local ids = nil
if ARGV[pos] ~= '*' then
  ids = {}
  for i = pos + 1, LAST do ids[#ids + 1] = ARGV[i] end
end

-- A job whose hash lacks a field this script reads, or holds text where it reads a
-- number (edited by hand): the script failed on it, for every claim, so no job ran.
-- Dead in place, never run; reading it answers job_unreadable naming the field.
-- Off its `was` count onto dead, and in fin: `spool purge` deletes it when its time
-- comes. A hash without its tenant or queue has it found by its callers (owner_of,
-- queue_of); one whose name cannot be found is counted where it can be (count_known):
-- the counts under the missing name stay, and the reply's {id, 'nameless'} has the
-- store log a WARNING naming the key (docs/operations.md).
local buried = {}
local function bury_damaged(id, what, tenant, queue, was)
  redis.call('HSET', jkey(id), 'state', 'dead', 'updated_at', now, 'finished_at', now,
    'last_error', "the job's stored record cannot be read (" .. what .. "), so it was "
    .. "not run; repair the hash and redrive the job, or delete it")
  redis.call('ZADD', P .. 'fin', now, id)
  count_known(tenant, queue, was, -1)
  count_known(tenant, queue, 'dead', 1)
  if not (tenant and queue) then buried[#buried + 1] = {id, 'nameless'} end
end

-- 1. reap: running jobs whose lease expired, in every queue (L: every queue's leases)
do
  local expired = redis.call('ZRANGEBYSCORE', P .. 'L', '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(expired) do
    local jk = jkey(id)
    local j = redis.call('HMGET', jk, 'attempts', 'max_attempts', 'started_at',
      'lease_expires_at', 'lease_worker', 'type', 'priority', 'created_at', 'tenant',
      'callback_url', 'queue', 'unstarted', 'lease_token', 'state')
    local q = j[11]
    if not j[14] then
      -- its hash is gone (see the lease below): its lease entry goes, nothing else
      redis.call('ZREM', P .. 'L', id)
    elseif not (q and tonumber(j[1]) and tonumber(j[2]) and tonumber(j[7]) and j[6] and j[8]
      and j[9]) then
      local owner = owner_of(id, j[9], j[8])
      q = queue_of(id, owner, q)
      if q then redis.call('ZREM', P .. 'l:' .. q, id) end
      redis.call('ZREM', P .. 'L', id)
      if j[6] then unindex_running(j[6], id) end
      redis.call('HDEL', jk, 'lease_token', 'lease_expires_at', 'lease_worker')
      bury_damaged(id, 'its hash lacks a tenant, type, queue or created_at field, or its '
        .. 'attempts, max_attempts or priority is no number; its lease had expired',
        owner, q, 'running')
    else
    redis.call('ZREM', P .. 'l:' .. q, id)
    redis.call('ZREM', P .. 'L', id)
    unindex_running(j[6], id)
    redis.call('HDEL', jk, 'lease_token', 'lease_expires_at', 'lease_worker')
    count(j[9], q, 'running', -1)
    if j[12] and j[12] ~= '0' and j[12] == j[13] then
      -- never started (START): the attempt is given back and the job waits again,
      -- due now; nothing ended, so nothing is counted or recorded. The mark is the
      -- lease token it was claimed under: an earlier release's claim (a rolling
      -- upgrade) leaves the field alone but takes a new token, so a mark it left
      -- behind never matches, and that run's attempt is spent
      redis.call('HSET', jk, 'state', 'queued', 'run_at', now, 'updated_at', now,
        'attempts', tostring(math.max(tonumber(j[1]) - 1, 0)), 'unstarted', '0')
      wait_at(id, j[9], q, j[7], now, j[8], now, j[6])
      count(j[9], q, 'queued', 1)
    else
    local dead = tonumber(j[1]) >= tonumber(j[2])
    -- a lease_expires_at (or started_at) edited into text ended the history's JSON
    -- with it: the attempt's times are then the reap's own
    local ended = tonumber(j[4]) and j[4] or now
    local began = tonumber(j[3]) and j[3] or ended
    local entry = '{"n":' .. j[1] .. ',"s":' .. began .. ',"f":' .. ended ..
      ',"w":' .. (j[5] or '"unknown"') .. ',"o":"lease_expired","e":' .. errjson
    if dead then entry = entry .. '}' else entry = entry .. ',"d":0.0}' end
    record(id, entry, keep)
    redis.call('HSET', jk, 'last_error', cjson.decode(errjson), 'updated_at', now)
    bump(j[9], q, j[6], 'failed')
    if dead then
      redis.call('HSET', jk, 'state', 'dead', 'finished_at', now)
      redis.call('ZADD', P .. 'fin', now, id)
      count(j[9], q, 'dead', 1)
      bump(j[9], q, j[6], 'dead')
      outbox(id, j[9], 'dead', now, j[10])
      buried[#buried + 1] = {id, j[9], j[6], q, j[1], j[2], j[5] or false}
    else
      redis.call('HSET', jk, 'state', 'retrying', 'run_at', now)
      wait_at(id, j[9], q, j[7], now, j[8], now, j[6])
      count(j[9], q, 'retrying', 1)
      bump(j[9], q, j[6], 'retried')
    end
    end
    end
  end
end

-- 2. promote what fell due (S: every queue's jobs not yet due), then the candidates:
-- due jobs, best first. At most 10,000 per claim, so a flood of jobs falling due at
-- once never blocks the server for long; the next claims promote the rest (until
-- then, a job still waiting in S can be passed by a less urgent one).
local due = redis.call('ZRANGEBYSCORE', P .. 'S', '-inf', now, 'LIMIT', 0, 10000)
for _, id in ipairs(due) do
  local j = redis.call('HMGET', jkey(id), 'priority', 'run_at', 'created_at', 'queue', 'tenant',
    'type', 'state')
  if not j[7] then  -- its hash is gone (see the lease below): only the entry goes
  elseif not (tonumber(j[1]) and tonumber(j[2]) and j[3] and j[4] and j[5] and j[6]) then
    local owner = owner_of(id, j[5], j[3])
    local q = queue_of(id, owner, j[4])
    unwait_known(owner, q, id)
    bury_damaged(id, 'its hash lacks a tenant, type, queue or created_at field, or its '
      .. 'priority or run_at is no number', owner, q,
      j[7] == 'retrying' and 'retrying' or 'queued')
  else
    ready(j[4], -tonumber(j[1]), rmember(j[2], j[3], id), j[5], j[6])
  end
  redis.call('ZREM', P .. 'S', id)
end
local picked = {}
local wanted = nil
if queues then
  wanted = {}
  for _, q in ipairs(queues) do wanted[q] = true end
end
"""

# Candidates named by id: {score, member, queue, type} each (the type for the limits).
_CLAIM_IDS = r"""
if ids then
  local seen = {}
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      local j = redis.call('HMGET', jkey(id), 'state', 'run_at', 'queue', 'priority', 'created_at',
        'type')
      -- a run_at, priority or created_at edited into text failed the whole claim: such
      -- a job is not picked here (its due entry is not known); a claim of its queue,
      -- which reads the entry itself, buries it (promotion, lease or stored_rows)
      local at = tonumber(j[2])
      if (j[1] == 'queued' or j[1] == 'retrying') and at and at <= nnow
        and tonumber(j[4]) and tonumber(j[5]) and (not wanted or wanted[j[3]]) then
        picked[#picked + 1] = {-tonumber(j[4]), rmember(j[2], j[5], id), j[3], j[6]}
      end
    end
  end
end
"""

# The best `limit` due jobs of every queue (R) or of the queues asked for.
_CLAIM_TOP = r"""
if ids or limit <= 0 then
elseif not queues then
  local top = redis.call('ZRANGE', P .. 'R', 0, limit - 1, 'WITHSCORES')
  for i = 1, #top, 2 do picked[#picked + 1] = {tonumber(top[i + 1]), top[i], false} end
else
  for _, q in ipairs(queues) do
    local top = redis.call('ZRANGE', P .. 'r:' .. q, 0, limit - 1, 'WITHSCORES')
    for i = 1, #top, 2 do picked[#picked + 1] = {tonumber(top[i + 1]), top[i], q} end
  end
end
"""

_CLAIM_SORT = r"""
table.sort(picked, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
"""

# 3. lease the first `limit` of `picked` (sorted); their rows go to `claimed`.
_CLAIM_LEASE = r"""
local claimed = {}
for i = 1, math.min(limit, #picked) do
  local p = picked[i]
  local id = string.sub(p[2], 41)
  local r = row(id)  -- read once, written once, and returned as it now stands
  if not r[7] then
    -- its hash is gone (evicted by an allkeys-* policy, deleted by hand) while its
    -- entries stayed: drop the due entries read here, or every claim meets it again
    redis.call('ZREM', P .. 'R', p[2])
    if p[3] then redis.call('ZREM', P .. 'r:' .. p[3], p[2]) end
  elseif not (r[2] and r[3] and r[4] and tonumber(r[8])) then
    -- a field the indexes are named by deleted or edited by hand (tenant, type, queue;
    -- attempts no number): this script failed on it, for every claim, and the queue
    -- behind it stalled. Dead in place, off the due entries read here, never run; its
    -- tenant is found by its listing set (owner_of), and reading it answers
    -- job_unreadable
    redis.call('ZREM', P .. 'R', p[2])
    if p[3] then redis.call('ZREM', P .. 'r:' .. p[3], p[2]) end
    if r[4] then redis.call('ZREM', P .. 'r:' .. r[4], p[2]) end
    local owner = owner_of(id, r[2], r[16])
    local q = queue_of(id, owner, r[4])
    if q and not r[4] then redis.call('ZREM', P .. 'r:' .. q, p[2]) end
    unwait_known(owner, q, id)
    bury_damaged(id, 'its hash lacks a tenant, type or queue field, or its attempts is no '
      .. 'number', owner, q, r[7])
  else
  local tenant, was, q = r[2], r[7], r[4]
  local attempts = tostring(tonumber(r[8]) + 1)
  unready(q, p[2], tenant, r[3])
  if ids then redis.call('ZREM', P .. 'S', id) end  -- a ready job is in r:/R only
  unwait(tenant, q, id)
  redis.call('HSET', jkey(id), 'state', 'running', 'attempts', attempts, 'lease_token', token,
    'lease_expires_at', expires, 'started_at', now, 'updated_at', now, 'lease_worker', worker,
    'unstarted', unstarted == '1' and token or '0')
  redis.call('ZADD', P .. 'l:' .. q, expires, id)
  redis.call('ZADD', P .. 'L', expires, id)
  index_running(r[3], id, expires)
  count(tenant, q, was, -1)
  count(tenant, q, 'running', 1)
  r[7], r[8], r[11], r[12], r[17], r[18] = 'running', attempts, token, expires, now, now
  claimed[#claimed + 1] = r
  end
end
"""

CLAIM = (
    _WRITE
    + _PRELUDE
    + "\nlocal LAST = #ARGV\n"
    + _CLAIM_REAP
    + _CLAIM_IDS
    + _CLAIM_TOP
    + _CLAIM_SORT
    + _CLAIM_LEASE
    + "\nflush()\nreturn {claimed, buried}\n"
)

# ARGV: P, now, minute, idbase, keep, then 7 per completion: id, token, state,
# result, error, retry_at, attempt entry (each optional one '-' or '+value').
# Applied in order, so a job named twice sees the first completion. Returns 1/0 each.
FINISH = (
    _WRITE
    + _PRELUDE
    + r"""
local now, keep = ARGV[2], ARGV[5]
MINUTE, IDBASE = ARGV[3], ARGV[4]
local out = {}
local n = (#ARGV - 5) / 7
for i = 0, n - 1 do
  local b = 5 + i * 7
  local id, token, state = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local jk = jkey(id)
  local j = redis.call('HMGET', jk, 'state', 'lease_token', 'queue', 'type', 'priority',
    'run_at', 'created_at', 'tenant', 'callback_url')
  if j[1] ~= 'running' or j[2] ~= token then
    out[#out + 1] = 0
  else
    local q, type_, tenant = j[3], j[4], j[8]
    local result, err = opt(ARGV[b + 4]), opt(ARGV[b + 5])
    local retry_at, entry = opt(ARGV[b + 6]), opt(ARGV[b + 7])
    local sets = {'state', state, 'updated_at', now}
    local dels = {'lease_token', 'lease_expires_at', 'lease_worker'}
    if result then
      sets[#sets + 1], sets[#sets + 2] = 'result', result
    else
      dels[#dels + 1] = 'result'
    end
    if err then
      sets[#sets + 1], sets[#sets + 2] = 'last_error', err
    else
      dels[#dels + 1] = 'last_error'
    end
    if state == 'retrying' then
      dels[#dels + 1] = 'finished_at'
      sets[#sets + 1], sets[#sets + 2] = 'run_at', retry_at or j[6]
    else
      sets[#sets + 1], sets[#sets + 2] = 'finished_at', now
      if retry_at then sets[#sets + 1], sets[#sets + 2] = 'run_at', retry_at end
    end
    redis.call('HDEL', jk, unpack(dels))
    redis.call('HSET', jk, unpack(sets))
    redis.call('ZREM', P .. 'l:' .. q, id)
    redis.call('ZREM', P .. 'L', id)
    unindex_running(type_, id)
    count(tenant, q, 'running', -1)
    count(tenant, q, state, 1)
    if state == 'retrying' then
      wait_at(id, tenant, q, j[5], retry_at or j[6], j[7], now, type_)
      bump(tenant, q, type_, 'failed')
      bump(tenant, q, type_, 'retried')
    else
      redis.call('ZADD', P .. 'fin', now, id)
      if state == 'succeeded' then
        bump(tenant, q, type_, 'succeeded')
      else
        bump(tenant, q, type_, 'failed')
        bump(tenant, q, type_, 'dead')
      end
      outbox(id, tenant, state, now, j[9])
    end
    if entry then record(id, entry, keep) end
    out[#out + 1] = 1
  end
end
flush()
return out
"""
)

# JobStore.extend_leases. ARGV: P, now, expires, then (id, lease token) pairs. Renews
# each lease that is that token's and still live; returns '1'/'0' per pair.
EXTEND = (
    _WRITE
    + _PRELUDE
    + r"""
local now, expires = ARGV[2], ARGV[3]
local flags = {}
for i = 4, #ARGV - 1, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local j = redis.call('HMGET', jkey(id), 'state', 'lease_token', 'lease_expires_at', 'queue',
    'type')
  if j[1] ~= 'running' or j[2] ~= token or tonumber(j[3]) <= tonumber(now) then
    flags[#flags + 1] = '0'
  else
    redis.call('HSET', jkey(id), 'lease_expires_at', expires, 'updated_at', now)
    redis.call('ZADD', P .. 'l:' .. j[4], expires, id)
    redis.call('ZADD', P .. 'L', expires, id)
    index_running(j[5], id, expires)
    flags[#flags + 1] = '1'
  end
end
return table.concat(flags)
"""
)

# JobStore.start. ARGV: P, now, then (id, lease token) pairs. Marks each job whose
# lease is that token and still live as started; returns '1'/'0' per pair.
START = (
    _WRITE
    + _PRELUDE
    + r"""
local now = tonumber(ARGV[2])
local flags = {}
for i = 3, #ARGV - 1, 2 do
  local jk = jkey(ARGV[i])
  local j = redis.call('HMGET', jk, 'state', 'lease_token', 'lease_expires_at')
  if j[1] == 'running' and j[2] == ARGV[i + 1] and tonumber(j[3]) > now then
    redis.call('HSET', jk, 'unstarted', '0')
    flags[#flags + 1] = '1'
  else
    flags[#flags + 1] = '0'
  end
end
return table.concat(flags)
"""
)

# ARGV: P, now, idbase, id, tenant ('-' or '+tenant'). Returns {'ok', row},
# {'missing'}, {'state', the job's state} or {'unreadable', what is wrong} (unsound).
CANCEL = (
    _WRITE
    + _PRELUDE
    + r"""
local now, id, tenant = ARGV[2], ARGV[4], opt(ARGV[5])
IDBASE = ARGV[3]
local jk = jkey(id)
local j = redis.call('HMGET', jk, 'state', 'tenant', 'queue', 'type', 'run_at', 'created_at',
  'callback_url')
if not j[1] or (tenant and j[2] ~= tenant) then return {'missing'} end
if j[1] ~= 'queued' and j[1] ~= 'retrying' then return {'state', j[1]} end
local bad = unsound(id)
if bad then return {'unreadable', bad} end
stop_waiting(id, j[2], j[3], j[5], j[6], j[4])
redis.call('HSET', jk, 'state', 'cancelled', 'updated_at', now, 'finished_at', now)
redis.call('ZADD', P .. 'fin', now, id)
count(j[2], j[3], j[1], -1)
count(j[2], j[3], 'cancelled', 1)
bump(j[2], j[3], j[4], 'cancelled')
outbox(id, j[2], 'cancelled', now, j[7])
flush()
return {'ok', row(id)}
"""
)

# ARGV: P, now, tenant ('-' or '+tenant'), the backlog cap ('*' for none, else its most,
# the tenant's: base.Backlog), ids. Returns the rows of the jobs moved, payload and
# result left out (nil: the caller reads the payloads after; a redrive drops the
# result); with a cap, the dead ones that fit only, and {'!', {waiting, dead}} when
# none does; {'?', id, what is wrong}, nothing written, when one it would move is
# damaged (unsound). Reading each moved job whole (payload and result, up to 256 KiB each)
# held Redis, for every client: another client's PING waited 110 ms while 100 jobs of
# 250 KB payloads and results were redriven, 640 ms for 1,000 (4 and 44 ms without
# the copies, as for jobs of 100 bytes): the script's time no longer grows with them.
REDRIVE = (
    _WRITE
    + _PRELUDE
    + _WAITING_OF
    + r"""
local now, tenant = ARGV[2], opt(ARGV[3])
local moved, touched = {}, {}
-- FIELDS with payload and result as '-', a field no record has (nil in the row).
local slim = {}
for i, name in ipairs(FIELDS) do
  slim[i] = (name == 'payload' or name == 'result') and '-' or name
end
local room, waiting, full = nil, 0, 0
if ARGV[4] ~= '*' then
  waiting = waiting_of(tenant)
  room = tonumber(ARGV[4]) - waiting
end
-- ARGV[5]: the attempts ceiling ('*': no cut), ARGV[6]: the bounds of the types above
-- it, as JSON (RedriveAttempts.cut).
local ceiling = ARGV[5] ~= '*' and tonumber(ARGV[5]) or nil
local above = ceiling and cjson.decode(ARGV[6]) or {}
-- Every job it would move is read, and a damaged one refuses the whole call, before
-- any write: {'?', id, what is wrong}
local read = {}
for i = 7, #ARGV do
  local id = ARGV[i]
  local j = redis.call('HMGET', jkey(id), 'state', 'tenant', 'queue', 'priority', 'created_at',
    'type', 'max_attempts')
  if j[1] == 'dead' and (not tenant or j[2] == tenant) then
    local bad = unsound(id)
    if bad then return {'?', id, bad} end
  end
  read[i] = j
end
for i = 7, #ARGV do
  local id = ARGV[i]
  local jk = jkey(id)
  local j = read[i]
  local fits = j[1] == 'dead' and (not tenant or j[2] == tenant)
  if fits and room then
    if room < 1 then
      fits = false
      full = full + 1
    else
      room = room - 1
    end
  end
  if fits then
    redis.call('HDEL', jk, 'result', 'finished_at')
    redis.call('HSET', jk, 'state', 'queued', 'attempts', '0', 'run_at', now, 'updated_at', now)
    if ceiling then
      local most = above[j[6]] or ceiling
      local had = tonumber(j[7])
      if had and had > most then redis.call('HSET', jk, 'max_attempts', tostring(most)) end
    end
    redis.call('ZREM', P .. 'fin', id)
    wait_at(id, j[2], j[3], j[4], now, j[5], now, j[6])
    count(j[2], j[3], 'dead', -1)
    count(j[2], j[3], 'queued', 1)
    moved[#moved + 1] = redis.call('HMGET', jk, unpack(slim))
    if j[2] then touched[j[2]] = true end
  end
end
if #moved == 0 and full > 0 then return {'!', {tostring(waiting), tostring(full)}} end
flush()
bump_epochs(touched)
if #moved > 0 then redis.call('PUBLISH', P .. 'wake', '') end
return moved
"""
)

# ARGV: P, before (exclusive), limit, tallies-before (exclusive). Returns how many
# jobs were deleted.
PURGE = (
    _FREE
    + _PRELUDE
    + r"""
local doomed = redis.call('ZRANGEBYSCORE', P .. 'fin', '-inf', '(' .. ARGV[2], 'LIMIT', 0,
  tonumber(ARGV[3]))
local touched = {}
for _, id in ipairs(doomed) do
  local owner = delete_job(id)
  if owner then touched[owner] = true end
end
flush()
bump_epochs(touched)
local stale = redis.call('ZRANGEBYSCORE', P .. 'tpm', '-inf', '(' .. ARGV[4])
for _, minute in ipairs(stale) do
  for _, tenant in ipairs(redis.call('SMEMBERS', P .. 'tn:' .. minute)) do
    redis.call('DEL', P .. 'tt:' .. minute .. ':' .. tenant)
  end
  redis.call('DEL', P .. 'tp:' .. minute, P .. 'tn:' .. minute)
  redis.call('ZREM', P .. 'tpm', minute)
end
return #doomed
"""
)

# ARGV: P, tenant ('-' or '+tenant'), ids. Deletes those that are dead jobs (of the
# tenant); returns their ids.
DISCARD = (
    _FREE
    + _PRELUDE
    + r"""
local tenant = opt(ARGV[2])
local gone, touched = {}, {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local j = redis.call('HMGET', jkey(id), 'state', 'tenant')
  if j[1] == 'dead' and (not tenant or j[2] == tenant) then
    delete_job(id)
    gone[#gone + 1] = id
    if j[2] then touched[j[2]] = true end
  end
end
flush()
bump_epochs(touched)
return gone
"""
)

# ARGV: P, index ('c' or 'ct:<tenant>'), direction ('asc' or 'desc'), start (a
# ZRANGEBYLEX bound), scan budget, wanted, then filters state, queue, type, tenant
# (each '-' or '+value'). Returns {rows, last member scanned or false, 1 when the
# index is exhausted}.
LIST = (
    _READ
    + _PRELUDE
    + r"""
local index, desc, start = P .. ARGV[2], ARGV[3] == 'desc', ARGV[4]
local budget, wanted = tonumber(ARGV[5]), tonumber(ARGV[6])
local fstate, fqueue, ftype, ftenant = opt(ARGV[7]), opt(ARGV[8]), opt(ARGV[9]), opt(ARGV[10])
-- ARGV[11] '0': no payload or result (JobQuery.bodies); a field no record has is nil.
local fields = FIELDS
if ARGV[11] == '0' then
  fields = {}
  for i, name in ipairs(FIELDS) do
    fields[i] = (name == 'payload' or name == 'result') and '-' or name
  end
end
local rows, last, scanned = {}, false, 0
while true do
  local chunk
  if desc then
    chunk = redis.call('ZREVRANGEBYLEX', index, start, '-', 'LIMIT', 0, 500)
  else
    chunk = redis.call('ZRANGEBYLEX', index, start, '+', 'LIMIT', 0, 500)
  end
  for _, member in ipairs(chunk) do
    last = member
    scanned = scanned + 1
    -- The filter reads the fields it compares; only a job it takes is read whole.
    -- Each scanned job's whole record (payload and result, up to 256 KiB each) held
    -- Redis, for every client, 77 ms for a tenant's 120 such jobs and a filter
    -- matching none (up to LIST_SCAN_BUDGET of them per call).
    local id = string.sub(member, 21)
    local f = redis.call('HMGET', jkey(id), 'id', 'tenant', 'type', 'queue', 'state')
    if f[1] and (not fstate or f[5] == fstate) and (not fqueue or f[4] == fqueue)
      and (not ftype or f[3] == ftype) and (not ftenant or f[2] == ftenant) then
      rows[#rows + 1] = redis.call('HMGET', jkey(id), unpack(fields))
      if #rows >= wanted then return {rows, last, 0} end
    end
  end
  if #chunk < 500 then return {rows, last, 1} end
  if scanned >= budget then return {rows, last, 0} end
  start = '(' .. last
end
"""
)

# ARGV: P, then '*' (every queue) or '=' and the queues. Returns {earliest waiting
# run_at, earliest lease expiry} as strings, false where there is none.
NEXT_DUE = (
    _READ
    + _PRELUDE
    + r"""
local best = {false, false}
if ARGV[2] == '*' then
  -- Every queue: the global indexes, whatever the number of queues.
  local first = redis.call('ZRANGE', P .. 'W', 0, 0, 'WITHSCORES')
  if first[2] then best[1] = first[2] end
  local lease = redis.call('ZRANGE', P .. 'L', 0, 0, 'WITHSCORES')
  if lease[2] then best[2] = lease[2] end
  return best
end
local queues = {}
for i = 3, #ARGV do queues[#queues + 1] = ARGV[i] end
for _, q in ipairs(queues) do
  for k, prefix in ipairs({'w:', 'l:'}) do
    local first = redis.call('ZRANGE', P .. prefix .. q, 0, 0, 'WITHSCORES')
    if first[2] and (not best[k] or tonumber(first[2]) < tonumber(best[k])) then
      best[k] = first[2]
    end
  end
end
return best
"""
)

# ARGV: P, worker, beat JSON, now, cutoff (exclusive).
BEAT = (
    _WRITE
    + _PRELUDE
    + r"""
redis.call('HSET', P .. 'wk', ARGV[2], ARGV[3])
redis.call('ZADD', P .. 'wb', ARGV[4], ARGV[2])
local old = redis.call('ZRANGEBYSCORE', P .. 'wb', '-inf', '(' .. ARGV[5])
for _, w in ipairs(old) do
  redis.call('HDEL', P .. 'wk', w)
  redis.call('ZREM', P .. 'wb', w)
end
return #old
"""
)

# ARGV: P, id, tenant ('-' for any, else '+tenant'). Returns {tenant, history entries};
# {false, {}} for no such job or another tenant's, whose history never leaves the server.
ATTEMPTS = (
    _READ
    + _PRELUDE
    + r"""
local tenant, wanted = redis.call('HGET', jkey(ARGV[2]), 'tenant'), opt(ARGV[3])
if not tenant or (wanted and tenant ~= wanted) then return {false, {}} end
return {tenant, redis.call('LRANGE', P .. 'h:' .. ARGV[2], 0, -1)}
"""
)

# ARGV: P, id, tenant, most. The job's fields (FIELDS order), or {} for no such job or
# another tenant's: the tenant is compared here, so none of another tenant's record
# (payload and result, up to 256 KiB each) is sent to be compared and dropped, which
# made another tenant's id answer measurably later than an unknown one. {false} for the
# tenant's own job whose payload and result are over `most` bytes together: the caller
# reads those with HMGET, as a script handing them back copies each through Lua
# (a 250 KB payload took three times as long).
# Without the prelude, which costs a read of a small job a tenth more time than it takes.
GET = (
    _READ
    + r"""
local jk = ARGV[1] .. 'j:' .. ARGV[2]
if redis.call('HGET', jk, 'tenant') ~= ARGV[3] then return {} end
local size = redis.call('HSTRLEN', jk, 'payload') + redis.call('HSTRLEN', jk, 'result')
if size > tonumber(ARGV[4]) then return {false} end
return redis.call('HMGET', jk, unpack("""
    + _JOB_FIELDS
    + r"""))
"""
)

# -- the webhook outbox -----------------------------------------------------------

# ARGV: P, now, expires, token, limit. Leases the earliest due pending deliveries
# without a live lease; returns their rows (DFIELDS order).
CLAIM_WEBHOOKS = (
    _WRITE
    + _PRELUDE
    + r"""
local now, expires, token, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local nnow = tonumber(now)
local found, offset = {}, 0
while #found < limit do
  local chunk = redis.call('ZRANGEBYSCORE', P .. 'dp', '-inf', now, 'LIMIT', offset, 200)
  for _, did in ipairs(chunk) do
    local d = redis.call('HMGET', P .. 'd:' .. did, 'lease_expires_at', 'next_at', 'created_at')
    if not d[3] then
      -- its hash is gone (evicted by an allkeys-* policy, deleted by hand): its
      -- entry goes (and its count: dp holds the pending ones), or every claim would
      -- sort a nil, raise, and deliver nothing
      redis.call('ZREM', P .. 'dp', did)
      redis.call('HINCRBY', P .. 'dc', 'pending', -1)
      offset = offset - 1
    elseif not d[1] or tonumber(d[1]) <= nnow then
      found[#found + 1] = {tonumber(d[2]), tonumber(d[3]), did}
    end
  end
  if #chunk < 200 then break end
  offset = offset + 200
end
table.sort(found, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end)
local out = {}
for i = 1, math.min(limit, #found) do
  local dk = P .. 'd:' .. found[i][3]
  redis.call('HINCRBY', dk, 'attempts', 1)
  redis.call('HSET', dk, 'lease_token', token, 'lease_expires_at', expires)
  out[#out + 1] = redis.call('HMGET', dk, unpack(DFIELDS))
end
return out
"""
)

# ARGV: P, now, id, token, outcome, retry_at, error (each optional one '-' or '+value').
FINISH_WEBHOOK = (
    _WRITE
    + _PRELUDE
    + r"""
local now, did, token, outcome = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local retry_at, err = opt(ARGV[6]), opt(ARGV[7])
local dk = P .. 'd:' .. did
local d = redis.call('HMGET', dk, 'state', 'lease_token')
if d[1] ~= 'pending' or d[2] ~= token then return 0 end
redis.call('HDEL', dk, 'lease_token', 'lease_expires_at', 'last_error', 'finished_at')
if err then redis.call('HSET', dk, 'last_error', err) end
if outcome == 'retrying' then
  local at = retry_at or now
  redis.call('HSET', dk, 'next_at', at)
  redis.call('ZADD', P .. 'dp', at, did)
else
  redis.call('HDEL', dk, 'next_at')
  redis.call('HSET', dk, 'state', outcome, 'finished_at', now)
  redis.call('ZREM', P .. 'dp', did)
  redis.call('HINCRBY', P .. 'dc', 'pending', -1)
  if outcome == 'failed' then redis.call('HINCRBY', P .. 'dc', 'failed', 1) end
end
return 1
"""
)

# ARGV: P, job id, tenant ('-' or '+tenant'). The job's deliveries, oldest first (by
# created_at, ties by id).
WEBHOOKS = (
    _READ
    + _PRELUDE
    + r"""
local tenant = opt(ARGV[3])
local owner = redis.call('HGET', jkey(ARGV[2]), 'tenant')
if not owner or (tenant and owner ~= tenant) then return {} end
local rows = {}
for _, did in ipairs(redis.call('LRANGE', P .. 'dj:' .. ARGV[2], 0, -1)) do
  local d = redis.call('HMGET', P .. 'd:' .. did, unpack(DFIELDS))
  rows[#rows + 1] = {tonumber(d[9]), did, d}  -- d[9]: created_at (DFIELDS)
end
table.sort(rows, by_age)
local out = {}
for i, r in ipairs(rows) do out[i] = r[3] end
return out
"""
)

# -- the scrape's summaries (JobStore.queue_totals) ---------------------------------

# ARGV: P. Once per keyspace (P qt = '2' marks it done): builds qv, ctot, qc and st
# from the full counters and tcounts, and qd and qdt:<tenant> from the waiting sets of
# the (tenant, queue) pairs tcounts says hold waiting jobs, which a keyspace of an older
# Spool has without them (qt = '1': it has the first four, and a set wq instead of the
# last two, dropped here). Linear in the names ever used, once; every script keeps them
# from then on. What this Spool's scripts wrote to them before is dropped or
# overwritten first: it is in the full hashes and the waiting sets too, so nothing
# counts twice. Returns 1 when it built them, 0 when done before.
QT_INSTALL = (
    _WRITE
    + _PRELUDE
    + r"""
local was = redis.call('GET', P .. 'qt')
if was == '2' then return 0 end
local sums = not was
redis.call('DEL', P .. 'qd', P .. 'wq')
if sums then redis.call('DEL', P .. 'qv', P .. 'ctot', P .. 'qc', P .. 'st') end
-- "<len>:<name>" at pos: the name and the position after it
local function piece(s, pos)
  local colon = string.find(s, ':', pos, true)
  local len = tonumber(string.sub(s, pos, colon - 1))
  return string.sub(s, colon + 1, colon + len), colon + len + 1
end
local raw = {}
if sums then raw = redis.call('HGETALL', P .. 'counters') end
for i = 1, #raw, 2 do
  local queue, pos = piece(raw[i], 1)
  local type_, rest = piece(raw[i], pos)
  local event = string.sub(raw[i], rest)
  local n = tonumber(raw[i + 1])
  delta(P .. 'ctot', #type_ .. ':' .. type_ .. event, n)
  if event == 'enqueued' then delta(P .. 'qv', queue, -n) else delta(P .. 'qv', queue, 0) end
end
raw = redis.call('HGETALL', P .. 'tcounts')
local tenants = {}
for i = 1, #raw, 2 do
  local tenant, pos = piece(raw[i], 1)
  local queue, rest = piece(raw[i], pos)
  local state = string.sub(raw[i], rest)
  local n = tonumber(raw[i + 1])
  if sums then
    delta(P .. 'qc', #queue .. ':' .. queue .. state, n)
    delta(P .. 'st', state, n)
  end
  tenants[tenant] = true
  if n > 0 and (state == 'queued' or state == 'retrying') then waits(tenant, queue, false) end
end
-- Every tenant with a count (tcounts keeps zeros) starts over: what an older process
-- left stale in its qdt: goes; flush() writes the waiting pairs back.
for tenant in pairs(tenants) do redis.call('DEL', P .. 'qdt:' .. tenant) end
flush()
redis.call('SET', P .. 'qt', '2')
return 1
"""
)

# ARGV: P, busiest, then the queues always named (without `_other`). One read, one
# snapshot: the named set (the known ones among those asked for, then the `busiest`
# others off qv), the named queues' counters (one field per (type, event) in ctot)
# and counts (one per state in st), and the totals ctot and st. Returns {named,
# {queue, type/event field, n, ...}, ctot flat, {queue, state, n, ...}, st flat}.
QUEUE_TOTALS = (
    _READ
    + _PRELUDE
    + r"""
local busiest = tonumber(ARGV[2])
local named, always = {}, {}
for i = 3, #ARGV do
  always[ARGV[i]] = true
  if redis.call('ZSCORE', P .. 'qv', ARGV[i]) then named[#named + 1] = ARGV[i] end
end
if busiest > 0 then
  -- At most every always-named queue and `_other` are skipped before `busiest` others.
  local top = redis.call('ZRANGE', P .. 'qv', 0, busiest + #ARGV - 2)
  local taken = 0
  for _, q in ipairs(top) do
    if taken >= busiest then break end
    if not always[q] and q ~= '_other' then
      named[#named + 1] = q
      taken = taken + 1
    end
  end
end
local ctot = redis.call('HGETALL', P .. 'ctot')
local st = redis.call('HGETALL', P .. 'st')
-- Fields of one hash, fetched in chunks (unpack has a limit), and the non-zero ones
-- returned with their queue and suffix.
local function own(key, suffixes)
  local out = {}
  for _, q in ipairs(named) do
    local prefix = #q .. ':' .. q
    for i = 1, #suffixes, 500 do
      local fields = {}
      for j = i, math.min(i + 499, #suffixes) do fields[#fields + 1] = prefix .. suffixes[j] end
      local values = redis.call('HMGET', key, unpack(fields))
      for j, v in ipairs(values) do
        if v and tonumber(v) ~= 0 then
          out[#out + 1] = q
          out[#out + 1] = suffixes[i + j - 1]
          out[#out + 1] = v
        end
      end
    end
  end
  return out
end
local events, states = {}, {}
for i = 1, #ctot, 2 do events[#events + 1] = ctot[i] end
for i = 1, #st, 2 do states[#states + 1] = st[i] end
return {named, own(P .. 'counters', events), ctot, own(P .. 'qc', states), st}
"""
)
