//! The Lua scripts that make each multi-step operation atomic.
//!
//! Redis runs a script to the end before it serves any other client (the Redis manual, "Scripting
//! with Lua": "Redis guarantees the script's atomic execution"), so a script's reads and writes
//! see no interleaving: a check made at its start still holds at its end. That is what a
//! check-then-write needs across many wschat processes ("is the nickname still mine? is this key
//! new? then take an id and append"), without locks or retries.
//!
//! Two rules shape every script below:
//!
//! - **Checks first, writes after.** A script that fails halfway does *not* roll back what it
//!   already wrote. So each script does every read that can refuse before its first write, and its
//!   writes are commands that cannot fail on well-formed keys.
//! - **Keys in `KEYS`, values in `ARGV`.** The keys a script touches are passed as its `KEYS` (the
//!   convention Redis uses to know which keys a script may touch). Two scripts also derive keys from
//!   data they read (a node's liveness key from a presence entry); that is fine on one Redis server
//!   or a primary with replicas, which is what this store supports, and is why it does not support
//!   Redis Cluster. (Neither could one global id counter live on many shards.)
//!
//! A script is sent once per connection with `SCRIPT LOAD`, which answers the SHA-1 of its text,
//! and then called by that digest with `EVALSHA`. The digest is computed here too
//! ([`Script::sha`]), so the client never depends on the server's answer to name a script. If the
//! server has forgotten the script (`SCRIPT FLUSH`, a restart, a failover to a replica that never
//! saw it) `EVALSHA` answers `NOSCRIPT` without running anything, and the call is repeated with
//! `EVAL` and the full text, which also caches the script again.
//!
//! Numbers: Redis's Lua has one number type, a double, exact for integers up to 2^53. Ids are
//! counted from 1 by one `INCR`; reaching 2^53 would take a million messages a second for three
//! centuries. Ids are still turned into text with `string.format('%d')` rather than Lua's default
//! `%.14g`, which would print a 15-digit id as `1.2345678901234e+14`.

use sha1::{Digest, Sha1};

/// One Lua script and what it is for.
#[derive(Debug, PartialEq, Eq)]
pub struct Script {
    /// A short name for logs and errors.
    pub name: &'static str,
    /// The Lua source, sent verbatim.
    pub body: &'static str,
}

impl Script {
    /// The SHA-1 of the body in lowercase hex: the name `EVALSHA` and `SCRIPT LOAD` use.
    pub fn sha(&self) -> String {
        let digest = Sha1::digest(self.body.as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// Every script, in the order a connection loads them.
pub const ALL: [&Script; 8] = [
    &PUBLISH,
    &EPOCH,
    &LEASE_ACQUIRE,
    &LEASE_RENEW,
    &LEASE_RENEW_MANY,
    &LEASE_RELEASE,
    &PRESENCE_LEAVE,
    &PRESENCE_MEMBERS,
];

/// What the publish script answers first: the case, then (for some) a value.
pub mod publish_status {
    /// `{0, id}`: stored with this new id.
    pub const STORED: i64 = 0;
    /// `{1, id}`: the room already accepted this key; `id` is the original message's.
    pub const DUPLICATE: i64 = 1;
    /// `{2}`: the nickname's lease is held by someone else, or by no one.
    pub const NOT_OWNER: i64 = 2;
    /// `{3, epoch or false}`: the data's epoch is not the one the sender knows.
    pub const EPOCH_CHANGED: i64 = 3;
}

/// Stores one chat message: the whole write path of a message, atomically.
///
/// `KEYS`: 1 the epoch, 2 the id counter, 3 the room's history stream, 4 the room's idempotency
/// keys, 5 the sender's nickname lease.
/// `ARGV`: 1 the epoch the sender knows, 2 the lease owner (empty: no lease check), 3 the
/// idempotency key (empty: none), 4 messages to keep in the room, 5 nickname, 6 text, 7 time (unix
/// ms), 8 the room's pub/sub channel, 9 the end of the pub/sub payload (time, nickname, text).
///
/// Answers `{status, value}` with a status from [`publish_status`].
pub const PUBLISH: Script = Script {
    name: "publish",
    body: r#"-- wschat publish: epoch check, dedup, lease check, new id, append, announce.

-- 1. The epoch. Ids count from the data's epoch on: if Redis lost its data (restarted empty,
--    flushed) the counter starts again from 1, and a message stored now must not be announced
--    under the epoch the sender knows, where its id may already mean another message. The sender
--    learns the current epoch (false if there is none yet) and stores nothing.
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then
  return {3, epoch}
end

-- 2. Exactly once. The room's key set maps each idempotency key to the id it stored (the id is
--    the member's score). A key seen before is answered with the original id, and nothing else
--    happens: that message was stored, announced and acknowledged (or will be) the first time.
if ARGV[3] ~= '' then
  local original = redis.call('ZSCORE', KEYS[4], ARGV[3])
  if original then
    return {1, tonumber(original)}
  end
end

-- 3. The nickname. Only the session holding the nickname's lease may speak under it: a node that
--    lost the lease (it stalled past the lease's expiry, another node's user took the name) must
--    not post in that user's name.
if ARGV[2] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[2] then
  return {2}
end

-- Every check passed: from here on only writes, none of which can refuse.

-- 4. The room's previous message id, read before appending. Subscribers compare it with the last
--    id they saw in this room: a mismatch means they missed a message (their subscription dropped,
--    or they subscribed late) and must read the gap from the history stream. The entry keeps it
--    too ('p'), so a history read tells whether trimming took what came before its first entry.
local prev = '0'
local newest = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if newest[1] then
  prev = string.match(newest[1][1], '^(%d+)')
end

-- 5. The id: one counter for every room, so ids strictly increase across rooms and nodes and are
--    never reused (the counter lives as long as the data, through restarts with AOF or RDB).
local id = string.format('%d', redis.call('INCR', KEYS[2]))

-- 6. Append. The stream entry's id is the message id itself (sequence part 0), so history reads
--    are plain id ranges. MAXLEN ~ keeps at least the room's quota; the "~" lets Redis trim whole
--    internal nodes only, which is much cheaper than trimming to the exact count.
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], id .. '-0',
  'n', ARGV[5], 't', ARGV[6], 'ts', ARGV[7], 'p', prev)

-- 7. Remember the key for exactly as long as the room keeps messages it could name: forget every
--    key whose message is older than the oldest one left in the stream.
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[4], id, ARGV[3])
end
local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
if oldest[1] then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.match(oldest[1][1], '^(%d+)'))
end

-- 8. Announce to every node subscribed to the room: the epoch, the id, the previous id, then the
--    rest of the message as the sender encoded it.
redis.call('PUBLISH', ARGV[8], 'm' .. ARGV[1] .. ' ' .. id .. ' ' .. prev .. ' ' .. ARGV[9])

return {0, tonumber(id)}
"#,
};

/// Reads the data's epoch, creating it first if there is none.
///
/// `KEYS`: 1 the epoch. `ARGV`: 1 a fresh random epoch, used only if none exists.
/// Answers the epoch (16 hex digits).
pub const EPOCH: Script = Script {
    name: "epoch",
    body: r#"-- wschat epoch: the first node to ask creates it (SET NX); everyone reads the winner's.
-- Created once per life of the data: a Redis that comes back empty has no epoch, and the next
-- node to connect draws a new one, which tells every client its ids name another history.
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"#,
};

/// Takes a nickname's lease, or keeps it.
///
/// `KEYS`: 1 the lease. `ARGV`: 1 the new owner, 2 the lease's life in ms, 3 an owner it may
/// replace (empty: none). Answers 1 if `ARGV[1]` holds the lease now, 0 if another owner does.
pub const LEASE_ACQUIRE: Script = Script {
    name: "lease_acquire",
    body: r#"-- wschat lease acquire. A lease is a key holding its owner, expiring on its own when its
-- node stops renewing it (crashed, partitioned): one owner at a time, and never forever.
local holder = redis.call('GET', KEYS[1])
-- Free, already ours (a repeated request), or held by the session we take over (a resume on
-- another node): take it, with a fresh life.
if holder == false or holder == ARGV[1] or (ARGV[3] ~= '' and holder == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#,
};

/// Extends a lease, only if the caller still holds it.
///
/// `KEYS`: 1 the lease. `ARGV`: 1 the owner, 2 the new life in ms. Answers 1 if renewed, 0 if the
/// lease is gone or someone else's.
pub const LEASE_RENEW: Script = Script {
    name: "lease_renew",
    body: r#"-- wschat lease renew. A plain PEXPIRE would also extend a lease that expired and was taken
-- by another session in the meantime; comparing the owner first makes renewal safe.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
};

/// Extends many leases in one call, each only if its owner still holds it: a node renews all its
/// sessions' leases with one script per round instead of one command per lease.
///
/// `KEYS`: the leases. `ARGV`: 1 the new life in ms, then one owner per key, in order. Answers one
/// 1 (renewed) or 0 (gone, or someone else's) per key, in order.
pub const LEASE_RENEW_MANY: Script = Script {
    name: "lease_renew_many",
    body: r#"-- wschat lease renew, many at once: the same check as lease_renew, key by key.
local renewed = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    renewed[i] = 1
  else
    renewed[i] = 0
  end
end
return renewed
"#,
};

/// Gives a lease back, only if the caller holds it.
///
/// `KEYS`: 1 the lease. `ARGV`: 1 the owner. Answers 1 if released, 0 if it was not the
/// caller's (already expired, or taken since).
pub const LEASE_RELEASE: Script = Script {
    name: "lease_release",
    body: r#"-- wschat lease release. A plain DEL could delete the lease of the session that took the
-- nickname after ours expired.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#,
};

/// Removes a member from a room's presence, only if the entry is the calling node's.
///
/// `KEYS`: 1 the room's presence hash. `ARGV`: 1 the member, 2 the node. Answers 1 if removed.
pub const PRESENCE_LEAVE: Script = Script {
    name: "presence_leave",
    body: r#"-- wschat presence leave. The member may already have moved on to another node (a resume
-- there): that node's entry must survive this node noticing the old connection closed.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"#,
};

/// Lists a room's members on live nodes, and forgets those of dead nodes.
///
/// `KEYS`: 1 the room's presence hash. `ARGV`: 1 the prefix of node liveness keys. Answers a flat
/// array member, node, member, node, ...
pub const PRESENCE_MEMBERS: Script = Script {
    name: "presence_members",
    body: r#"-- wschat presence members. A node proves it is alive by renewing its liveness key (a key
-- with a short expiry). A node that died cannot remove its members; they stop being listed as
-- soon as its liveness key expires, and are deleted here when first noticed.
local entries = redis.call('HGETALL', KEYS[1])
local alive = {}
local members = {}
for i = 1, #entries, 2 do
  local member, node = entries[i], entries[i + 1]
  if alive[node] == nil then
    alive[node] = redis.call('EXISTS', ARGV[1] .. node) == 1
  end
  if alive[node] then
    members[#members + 1] = member
    members[#members + 1] = node
  else
    redis.call('HDEL', KEYS[1], member)
  end
end
return members
"#,
};
