package proxy

import (
	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/replay"
)

// Control frames: everything lastevent itself writes into a stream. Their
// payload shapes live here and nowhere else.

// Event types of the control frames.
const (
	EventSyncRequired = "sync-required"
	EventSystemSync   = "system-sync"
)

// Reasons carried in a sync-required payload.
const (
	ReasonMalformed         = "malformed-id"        // Last-Event-ID is not an id lastevent issued
	ReasonEvicted           = "evicted"             // the frames after the id are no longer buffered
	ReasonUnknown           = "unknown-id"          // the id is newer than anything this stream issued
	ReasonOtherStream       = "other-stream"        // the id belongs to another stream (path, query)
	ReasonKeyMismatch       = "stream-key-mismatch" // same stream, but the stream-key headers differ
	ReasonUpstreamReconnect = "upstream-reconnect"  // the upstream connection was lost and reopened
	ReasonFrameTooLarge     = "frame-too-large"     // the upstream sent a frame above LASTEVENT_MAX_FRAME_BYTES
	ReasonSlowClient        = "slow-client"         // the client fell behind the buffer
)

// syncRetry is the retry: sent with a sync event, so a client that then
// reloads its state and reconnects does so promptly.
const syncRetry = 1000

// appendSyncRequired appends a whole sync-required frame whose id is the
// stream's current head: a client that reconnects with it resumes from there.
func appendSyncRequired(dst []byte, head replay.ID, reason string, withRetry bool) []byte {
	dst = appendControlHead(dst, head, EventSyncRequired, withRetry)
	dst = append(dst, `data: {"reason":"`...)
	dst = append(dst, reason...)
	dst = append(dst, `","id":"`...)
	dst = head.AppendText(dst)
	return append(dst, "\"}\n\n"...)
}

// appendSystemSync appends a system-sync frame: the id's generation is gone,
// so the client must take a fresh snapshot; data is LASTEVENT_SYSTEM_SYNC_DATA.
func appendSystemSync(dst []byte, head replay.ID, data string) []byte {
	dst = appendControlHead(dst, head, EventSystemSync, true)
	dst = append(dst, "data: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}

func appendControlHead(dst []byte, id replay.ID, event string, withRetry bool) []byte {
	if withRetry {
		dst = frame.AppendRetry(dst, syncRetry)
	}
	dst = append(dst, "id: "...)
	dst = id.AppendText(dst)
	dst = append(dst, "\nevent: "...)
	dst = append(dst, event...)
	return append(dst, '\n')
}

// appendPreamble starts every SSE response: the configured retry.
func appendPreamble(dst []byte, retryMs int64) []byte {
	dst = frame.AppendRetry(dst, retryMs)
	return append(dst, '\n')
}

var heartbeat = frame.AppendComment(nil, "heartbeat")

// clampRetry bounds an upstream's retry: before it is passed on.
func clampRetry(ms int64) int64 {
	return min(max(ms, MinRetry.Milliseconds()), MaxRetry.Milliseconds())
}

// genText is the generation part of an id's text form.
func genText(g replay.Gen) string { return replay.ID{Gen: g}.String()[:26] }
