// Package redisstore is a replay.Store kept in Redis, so that any replica of
// lastevent can resume a client of any stream exactly. It uses
// github.com/redis/go-redis/v9 and needs Redis 5 or newer (streams, Lua);
// it is tested with Redis 7.0. Its keys are Redis Cluster safe. It has no
// other network code and does not log.
//
// # Keys
//
// One generation of one lastevent stream owns three keys under one hash tag,
// so they live in one Redis Cluster slot and one Lua script can touch them
// all (see Keys):
//
//	{le:<generation text>}:log    a stream: entry "<seq>-0" holds field "f", the encoded frame
//	{le:<generation text>}:meta   a hash: gen, oldest, newest, bytes, upstream (the upstream's
//	                              own last event id), owner (node id), token (fencing counter)
//	{le:<generation text>}:lease  a string "<token> <instance> <node id>" with a PX expiry
//
// Beside them (shared.go), each under a hash tag of its own:
//
//	{le:<label>}:meta        an alias: gen, alias (the generation whose log holds the
//	                         frames), from (the first sequence issued under label)
//	{le:k:<sha256 of key>}   the current generation of a stream key (ClaimIndex)
//	{le:<generation>}:watch  set by a follower with clients (Watch), so the owner keeps going
//
// Entry ids are derived from the sequence, so a read from any cursor is one
// XRANGE from "<after+1>-0" (O(log n) in Redis), sent in one MULTI with the
// HMGET of meta's bounds. Appends trim with MAXLEN ~ capacity, which drops
// whole stream nodes and so may keep up to one node of entries older than
// the capacity; meta's oldest is the exact bound (max(first,
// newest-capacity+1)), reported by Bounds and enforced by Read, so the store
// behaves like a ring of exactly capacity frames.
//
// The keys expire a retention time (WithRetention) after the last lease
// renewal or release, so Redis does not fill up with the logs of streams that
// ended; while an owner renews, they do not expire. Run Redis with
// maxmemory-policy noeviction (or a volatile policy with enough room): an
// evicted log reads as replay.ErrEvicted, an evicted meta as
// ErrUnknownGeneration, never as a silent gap, but both cost clients a sync.
//
// # Ownership
//
// Exactly one node reads a stream's upstream and appends: the owner, the
// holder of the lease.
//
//   - The node that opens a stream makes a new generation and calls New
//     (which reports ErrUnknownGeneration for it, as expected) and Create,
//     which writes meta and takes the lease with fencing token 1.
//   - The owner appends with Append or AppendContext. One Lua script checks
//     the owner's fencing token against meta and that the first sequence is
//     newest+1, then appends with explicit ids, trims, and updates meta, all
//     atomically; it delivers a frame to its clients only after the append
//     returned. An append retried after a timeout is idempotent.
//   - The owner calls Renew every third of the lease's life (Lease.RenewAt);
//     that timer is the caller's. Renew re-arms a lease that expired while
//     no one else took it.
//   - Another node takes over with Acquire once the lease is free (expired,
//     or released by Release or Close). Acquire takes the lease with SET NX
//     PX and a new token from the counter, so from that moment every append
//     of the old owner fails with ErrFenced, even one already on the wire.
//     The new owner reads Meta for Newest (it appends Newest+1) and
//     UpstreamID (the Last-Event-ID it sends to the upstream).
//   - A node that has clients on a stream it does not own follows it with
//     Tail, one blocking XREAD per call, into its local ring.
//
// # Failures
//
// Every call has a timeout (WithTimeout); a paused or unreachable Redis gives
// an error that names the operation and key and satisfies
// errors.Is(err, context.DeadlineExceeded), never a hang. A Redis that lost
// its data (restarted without persistence) makes New, Meta, Append, Renew,
// Acquire and Tail report ErrUnknownGeneration, and Read report it wrapped
// with replay.ErrEvicted: the generation is gone and clients holding its ids
// need system-sync.
package redisstore
