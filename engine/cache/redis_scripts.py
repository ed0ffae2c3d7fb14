"""The Lua scripts that are the only writers of a Redis-indexed cache's state.

Every change to the bound's terms happens inside one script, so it is atomic on the server,
and every time it reads is the server's clock (``TIME``): leases expire by one clock for
every machine, however far the nodes' clocks drift.

Keys under the prefix ``P`` (one hash tag, so a Redis Cluster keeps them in one slot):

=================  ======  =============================================================
``P:meta``         hash    max, target, ttl_ms, block, uuid, created: the root's limits
``P:cnt``          hash    live, data, entries (the index); reserved (live leases);
                           quarantined (expired leases not reconciled yet); doomed (entries
                           out of the index whose files are not unlinked yet); fence;
                           hits, misses, evicted_files, evicted_bytes, expired_files
``P:rows``         hash    key -> row (JSON: name, size, charge, checksum, ino, created, node)
``P:lru``          zset    key -> last access (ms, server clock)
``P:created``      zset    key -> written at (ms), for ``ttl``
``P:leases``       zset    fence -> expiry (ms); ``P:lease`` hash fence -> what it reserved
``P:quar``         hash    fence -> an expired lease's record; ``P:quarclaim`` zset -> claim expiry
``P:doomed``       hash    name -> (charge, key, reason); ``P:doomclaim`` zset -> claim expiry
``P:pin:<name>``   zset    reader -> expiry (ms): a pin is a lease of one reader on one file
``P:nodes``        zset    node -> last seen (ms): which machines write this cache
``P:evlock``       string  the evictor's token (SET NX PX): one evictor at a time
``P:log``          stream  eviction reports, capped
=================  ======  =============================================================

The bound: ``live + reserved + quarantined + doomed <= max`` where each term is in bytes
charged by the block. Bytes move between terms inside one script, so the sum never drops
while they are on disk: a lease's bytes become the row's at commit; an expired lease's
become quarantined until a reconciler has removed its files; an evicted row's become doomed
until its file is unlinked.
"""

from __future__ import annotations

__all__ = ["PRELUDE", "SCRIPTS"]

# Shared by every script. ARGV[1] is the prefix; KEYS[1] is P:meta (declared for proxies and
# clusters; the other keys share its hash tag).
PRELUDE = r"""
local P = ARGV[1]
local CNT = P .. ':cnt'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function incr(f, n)
  if n ~= 0 then redis.call('HINCRBY', CNT, f, n) end
end
local function used()
  local v = redis.call('HMGET', CNT, 'live', 'reserved', 'quarantined', 'doomed')
  return (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0) + (tonumber(v[3]) or 0) + (tonumber(v[4]) or 0)
end
local function need_meta()
  if redis.call('EXISTS', P .. ':meta') == 0 then
    return redis.error_reply('CWLOST the index is empty')
  end
  return nil
end
-- Expired leases: their bytes stay counted, as quarantined, until a reconciler has removed
-- the writer's files (its .part and the name it would have taken).
local function settle(now)
  local gone = redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', now)
  for _, f in ipairs(gone) do
    local rec = redis.call('HGET', P .. ':lease', f)
    redis.call('ZREM', P .. ':leases', f)
    redis.call('HDEL', P .. ':lease', f)
    if rec then
      local r = cjson.decode(rec)
      redis.call('HSET', P .. ':quar', f, rec)
      redis.call('ZADD', P .. ':quarclaim', 0, f)
      incr('reserved', -r.c)
      incr('quarantined', r.c)
    end
  end
  return #gone
end
local function pinned(name, now)
  local k = P .. ':pin:' .. name
  if redis.call('EXISTS', k) == 0 then return false end
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
  return redis.call('ZCARD', k) > 0
end
-- Records (ARGV[2..]) whose files are gone from disk, or were never made: their bytes leave
-- the count `field`, and their claim or expiry entries go.
local function release(records, claims, field)
  local freed = 0
  for i = 2, #ARGV do
    local rec = redis.call('HGET', P .. records, ARGV[i])
    if rec then
      local r = cjson.decode(rec)
      redis.call('HDEL', P .. records, ARGV[i])
      redis.call('ZREM', P .. claims, ARGV[i])
      incr(field, -r.c)
      freed = freed + r.c
    end
  end
  return freed
end
local function doom(name, charge, key, reason, claim_until)
  redis.call('HSET', P .. ':doomed', name, cjson.encode({c = charge, k = key, r = reason}))
  redis.call('ZADD', P .. ':doomclaim', claim_until, name)
  incr('doomed', charge)
end
-- Out of the index (no longer visible), still counted as doomed until its file is gone.
local function unindex(key, r, reason, claim_until)
  redis.call('HDEL', P .. ':rows', key)
  redis.call('ZREM', P .. ':lru', key)
  redis.call('ZREM', P .. ':created', key)
  incr('live', -r.c)
  incr('data', -r.s)
  incr('entries', -1)
  doom(r.n, r.c, key, reason, claim_until)
end
"""

# ARGV: P, max, target, ttl_ms (-1: none), block, uuid, mode ('create' | 'open' | 'resize')
_INIT = r"""
local M = P .. ':meta'
local mode = ARGV[7]
if redis.call('EXISTS', M) == 1 then
  if mode == 'resize' then
    redis.call('HSET', M, 'max', ARGV[2], 'target', ARGV[3])
  end
  local v = redis.call('HMGET', M, 'max', 'target', 'ttl_ms', 'block', 'uuid')
  return {0, v[1], v[2], v[3], v[4], v[5]}
end
if mode == 'open' then
  return redis.error_reply('CWLOST the index is empty')
end
redis.call('HSET', M, 'max', ARGV[2], 'target', ARGV[3], 'ttl_ms', ARGV[4], 'block', ARGV[5],
           'uuid', ARGV[6], 'created', now_ms())
redis.call('HSETNX', CNT, 'fence', 0)
return {1, ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]}
"""

# ARGV: P, node, charge, key, base name, part prefix, lease_ms, limit ('t' target | 'm' max)
# -> {1, fence, name, part, used after} | {0, used, limit}
_RESERVE = r"""
local e = need_meta(); if e then return e end
local now = now_ms()
settle(now)
local charge = tonumber(ARGV[3])
local lim = tonumber(redis.call('HGET', P .. ':meta', ARGV[8] == 'm' and 'max' or 'target'))
local u = used()
if u + charge > lim then return {0, u, lim} end
local f = redis.call('HINCRBY', CNT, 'fence', 1)
local name = ARGV[5] .. '%%v' .. string.format('%012x', f)
local part = ARGV[6] .. f .. '.part'
redis.call('HSET', P .. ':lease', f, cjson.encode({c = charge, k = ARGV[4], n = name, p = part, o = ARGV[2], t = now}))
redis.call('ZADD', P .. ':leases', now + tonumber(ARGV[7]), f)
incr('reserved', charge)
redis.call('ZADD', P .. ':nodes', now, ARGV[2])
return {1, f, name, part, u + charge}
"""

# ARGV: P, lease_ms, pin_ms, n_fences, fences..., then (name, reader) pairs
# -> the fences and pins that were already gone (their holders must stop)
_RENEW = r"""
local now = now_ms()
local lost = {}
local nf = tonumber(ARGV[4])
for i = 5, 4 + nf do
  local s = redis.call('ZSCORE', P .. ':leases', ARGV[i])
  if s and tonumber(s) > now then
    redis.call('ZADD', P .. ':leases', 'XX', now + tonumber(ARGV[2]), ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
local pin_ms = tonumber(ARGV[3])
for i = 5 + nf, #ARGV, 2 do
  local k = P .. ':pin:' .. ARGV[i]
  local s = redis.call('ZSCORE', k, ARGV[i + 1])
  if s and tonumber(s) > now then
    redis.call('ZADD', k, 'XX', now + pin_ms, ARGV[i + 1])
    redis.call('PEXPIRE', k, 2 * pin_ms)
  else
    table.insert(lost, 'pin:' .. ARGV[i])
  end
end
return lost
"""

# ARGV: P, fence, key, row json (without created), size, charge, name, claim_ms
# -> {1, replaced name or '', now} | {0}: the lease expired (the put is refused)
_COMMIT = r"""
local e = need_meta(); if e then return e end
local now = now_ms()
local f = ARGV[2]
local s = redis.call('ZSCORE', P .. ':leases', f)
if not s or tonumber(s) <= now then
  settle(now)
  return {0}
end
local charge = tonumber(ARGV[6])
local size = tonumber(ARGV[5])
local key = ARGV[3]
redis.call('ZREM', P .. ':leases', f)
redis.call('HDEL', P .. ':lease', f)
incr('reserved', -charge)
local oldname = ''
local old = redis.call('HGET', P .. ':rows', key)
if old then
  local o = cjson.decode(old)
  if pinned(o.n, now) then
    unindex(key, o, 'replaced', 0)  -- a reconciler unlinks it once its readers let go
  else
    unindex(key, o, 'replaced', now + tonumber(ARGV[8]))
    oldname = o.n
  end
end
local row = cjson.decode(ARGV[4])
row.t = now
redis.call('HSET', P .. ':rows', key, cjson.encode(row))
redis.call('ZADD', P .. ':lru', now, key)
redis.call('ZADD', P .. ':created', now, key)
incr('live', charge)
incr('data', size)
incr('entries', 1)
return {1, oldname, now}
"""

# ARGV: P, fence -> bytes released: the writer gave up and removed its own files
_ABORT = r"""
local freed = release(':lease', ':leases', 'reserved')
if freed == 0 then freed = release(':quar', ':quarclaim', 'quarantined') end
return freed
"""

# ARGV: P, goal used bytes, max victims, claim_ms, reason ('lru' | 'ttl' | ...), ttl cutoff ms (ttl only),
#       'batch' to go a little below the goal (32 average entries, at most 1/16 of the target):
#       one round's fixed cost (a lock, two scripts, an event) shared by several puts
# -> {used before, freed bytes, pinned skipped, name1, key1, charge1, ...}; victims are doomed
# and claimed by the caller, who unlinks their files and then calls DONE.
_EVICT = r"""
local e = need_meta(); if e then return e end
local now = now_ms()
settle(now)
local goal = tonumber(ARGV[2])
if ARGV[7] == 'batch' then
  local v = redis.call('HMGET', CNT, 'live', 'entries')
  local live, n = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  local avg = 0
  if n > 0 then avg = live / n end
  local tgt = tonumber(redis.call('HGET', P .. ':meta', 'target'))
  goal = math.max(0, goal - math.min(math.floor(tgt / 16), math.floor(32 * avg)))
end
local max_n = tonumber(ARGV[3])
local claim = now + tonumber(ARGV[4])
local reason = ARGV[5]
local ttl = reason == 'ttl'
local u = used()
local freed = 0
local skipped = 0
local out = {}
local n = 0
local idx = 0
while n < max_n and (ttl or u - freed > goal) do
  local ks
  if ttl then
    ks = redis.call('ZRANGEBYSCORE', P .. ':created', '-inf', ARGV[6], 'LIMIT', idx, 64)
  else
    ks = redis.call('ZRANGE', P .. ':lru', idx, idx + 63)
  end
  if #ks == 0 then break end
  for _, k in ipairs(ks) do
    if n >= max_n or (not ttl and u - freed <= goal) then break end
    local row = redis.call('HGET', P .. ':rows', k)
    if not row then
      redis.call('ZREM', P .. ':lru', k)
      redis.call('ZREM', P .. ':created', k)
    else
      local r = cjson.decode(row)
      if pinned(r.n, now) then
        idx = idx + 1
        skipped = skipped + 1
      else
        unindex(k, r, reason, claim)
        freed = freed + r.c
        n = n + 1
        table.insert(out, r.n); table.insert(out, k); table.insert(out, r.c)
        if ttl then incr('expired_files', 1) else incr('evicted_files', 1); incr('evicted_bytes', r.c) end
      end
    end
  end
end
local res = {u, freed, skipped}
for _, v in ipairs(out) do table.insert(res, v) end
return res
"""

# ARGV: P, key, claim_ms -> {found (0/1), name claimed for unlinking or ''}
_DELETE = r"""
local e = need_meta(); if e then return e end
local now = now_ms()
local row = redis.call('HGET', P .. ':rows', ARGV[2])
if not row then return {0, ''} end
local r = cjson.decode(row)
if pinned(r.n, now) then
  unindex(ARGV[2], r, 'delete', 0)
  return {1, ''}
end
unindex(ARGV[2], r, 'delete', now + tonumber(ARGV[3]))
return {1, r.n}
"""

# ARGV: P, names... -> bytes released: those files are gone from disk
_DONE = r"""
return release(':doomed', ':doomclaim', 'doomed')
"""

# ARGV: P, claim_ms, max -> {'q', fence, record, ..., 'd', name, ...}: the reconciler's work,
# claimed for claim_ms (a reconciler that dies leaves it to the next one)
_CLAIM = r"""
local now = now_ms()
settle(now)
local claim = now + tonumber(ARGV[2])
local max_n = tonumber(ARGV[3])
local out = {}
local fs = redis.call('ZRANGEBYSCORE', P .. ':quarclaim', '-inf', now, 'LIMIT', 0, max_n)
for _, f in ipairs(fs) do
  local rec = redis.call('HGET', P .. ':quar', f)
  if rec then
    redis.call('ZADD', P .. ':quarclaim', claim, f)
    table.insert(out, 'q'); table.insert(out, f); table.insert(out, rec)
  else
    redis.call('ZREM', P .. ':quarclaim', f)
  end
end
local ns = redis.call('ZRANGEBYSCORE', P .. ':doomclaim', '-inf', now, 'LIMIT', 0, max_n)
for _, name in ipairs(ns) do
  if redis.call('HEXISTS', P .. ':doomed', name) == 0 then
    redis.call('ZREM', P .. ':doomclaim', name)
  elseif not pinned(name, now) then
    redis.call('ZADD', P .. ':doomclaim', claim, name)
    table.insert(out, 'd'); table.insert(out, name)
  end
end
return out
"""

# ARGV: P, fences... -> bytes released: a reconciler removed those writers' files
_QUAR_DONE = r"""
return release(':quar', ':quarclaim', 'quarantined')
"""

# ARGV: P, key, reader, pin_ms -> the row (JSON) or false
_PIN = r"""
local row = redis.call('HGET', P .. ':rows', ARGV[2])
if not row then return false end
local r = cjson.decode(row)
local k = P .. ':pin:' .. r.n
local now = now_ms()
redis.call('ZADD', k, now + tonumber(ARGV[4]), ARGV[3])
redis.call('PEXPIRE', k, 2 * tonumber(ARGV[4]))
return row
"""

# ARGV: P, name, reader
_UNPIN = r"""
redis.call('ZREM', P .. ':pin:' .. ARGV[2], ARGV[3])
return 1
"""

# ARGV: P, hits, misses, keys... (accessed): LRU order by the server's clock
_TOUCH = r"""
local now = now_ms()
incr('hits', tonumber(ARGV[2]))
incr('misses', tonumber(ARGV[3]))
for i = 4, #ARGV do
  redis.call('ZADD', P .. ':lru', 'XX', now, ARGV[i])
end
return now
"""

# ARGV: P, token -> 1 if this evictor held the lock and released it
_UNLOCK = r"""
if redis.call('GET', P .. ':evlock') == ARGV[2] then
  redis.call('DEL', P .. ':evlock')
  return 1
end
return 0
"""

# ARGV: P, token, ms -> 1 if this evictor still held the lock, which now lasts ms more
_EXTEND = r"""
if redis.call('GET', P .. ':evlock') == ARGV[2] then
  redis.call('PEXPIRE', P .. ':evlock', tonumber(ARGV[3]))
  return 1
end
return 0
"""

# ARGV: P, key, row json (with created), size, charge, fence seen in the name
# -> 1 adopted, 0 the key has a newer version (the caller deletes this file), -1 no room
_ADOPT = r"""
local e = need_meta(); if e then return e end
local now = now_ms()
local key = ARGV[2]
local row = cjson.decode(ARGV[3])
local charge = tonumber(ARGV[5])
local f = tonumber(ARGV[6])
if f > tonumber(redis.call('HGET', CNT, 'fence') or '0') then
  redis.call('HSET', CNT, 'fence', f)
end
local old = redis.call('HGET', P .. ':rows', key)
local oc = 0
if old then
  local o = cjson.decode(old)
  if (o.f or 0) >= f then return 0 end
  oc = o.c
end
local max = tonumber(redis.call('HGET', P .. ':meta', 'max'))
if used() - oc + charge > max then return -1 end
if old then unindex(key, cjson.decode(old), 'replaced', 0) end
redis.call('HSET', P .. ':rows', key, cjson.encode(row))
redis.call('ZADD', P .. ':lru', row.t, key)
redis.call('ZADD', P .. ':created', row.t, key)
incr('live', charge)
incr('data', tonumber(ARGV[4]))
incr('entries', 1)
return 1
"""

# ARGV: P, key, expected name -> 1 if the row (still naming that file) was dropped
_DROP_ROW = r"""
local row = redis.call('HGET', P .. ':rows', ARGV[2])
if not row then return 0 end
local r = cjson.decode(row)
if r.n ~= ARGV[3] then return 0 end
redis.call('HDEL', P .. ':rows', ARGV[2])
redis.call('ZREM', P .. ':lru', ARGV[2])
redis.call('ZREM', P .. ':created', ARGV[2])
incr('live', -r.c)
incr('data', -r.s)
incr('entries', -1)
return 1
"""

# ARGV: P -> the counters recomputed from the rows (live, data, entries) and the records
# (reserved, quarantined, doomed); returns the old and new values, flattened
_RECOUNT = r"""
local live, data, entries = 0, 0, 0
local cursor = '0'
repeat
  local res = redis.call('HSCAN', P .. ':rows', cursor, 'COUNT', 1000)
  cursor = res[1]
  local kv = res[2]
  for i = 2, #kv, 2 do
    local r = cjson.decode(kv[i])
    live = live + r.c; data = data + r.s; entries = entries + 1
  end
until cursor == '0'
local function sum(h)
  local t = 0
  local vals = redis.call('HVALS', h)
  for _, v in ipairs(vals) do t = t + cjson.decode(v).c end
  return t
end
local new = {live = live, data = data, entries = entries, reserved = sum(P .. ':lease'),
             quarantined = sum(P .. ':quar'), doomed = sum(P .. ':doomed')}
local out = {}
for _, f in ipairs({'live', 'data', 'entries', 'reserved', 'quarantined', 'doomed'}) do
  local old = tonumber(redis.call('HGET', CNT, f) or '0')
  table.insert(out, f); table.insert(out, old); table.insert(out, new[f])
  if ARGV[2] == 'fix' then redis.call('HSET', CNT, f, new[f]) end
end
return out
"""

# ARGV: P -> {counters as a flat HGETALL, bytes of leases already expired, live leases, the
# nodes that reserved in the last hour}: what stats show, in one round trip. Read-only: an expired lease not settled by a script yet is reported as quarantined.
_STATS = r"""
local now = now_ms()
local expired = 0
for _, f in ipairs(redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', now)) do
  local rec = redis.call('HGET', P .. ':lease', f)
  if rec then expired = expired + cjson.decode(rec).c end
end
local live = redis.call('ZCOUNT', P .. ':leases', '(' .. now, '+inf')
local recent = redis.call('ZRANGEBYSCORE', P .. ':nodes', now - 3600000, '+inf')
return {redis.call('HGETALL', CNT), expired, live, recent}
"""

SCRIPTS: dict[str, str] = {
    "stats": _STATS,
    "init": _INIT,
    "reserve": _RESERVE,
    "renew": _RENEW,
    "commit": _COMMIT,
    "abort": _ABORT,
    "evict": _EVICT,
    "delete": _DELETE,
    "done": _DONE,
    "claim": _CLAIM,
    "quar_done": _QUAR_DONE,
    "pin": _PIN,
    "unpin": _UNPIN,
    "touch": _TOUCH,
    "unlock": _UNLOCK,
    "extend": _EXTEND,
    "adopt": _ADOPT,
    "drop_row": _DROP_ROW,
    "recount": _RECOUNT,
}
