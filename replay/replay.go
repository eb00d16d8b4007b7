// Package replay holds event ids and the per-stream log of encoded frames
// that resumes are served from. It has no network code and no logging.
package replay

import "errors"

// Errors returned by Store.Read.
var (
	// ErrEvicted: the frames right after the requested sequence are no longer
	// kept (the reader fell off the tail of the log).
	ErrEvicted = errors.New("replay: sequence evicted")
	// ErrAhead: the requested sequence is newer than the newest frame; the id
	// was never issued by this log.
	ErrAhead = errors.New("replay: sequence ahead of the log")
	// ErrOutOfOrder: Append was called with a sequence that does not follow
	// the newest one.
	ErrOutOfOrder = errors.New("replay: sequence out of order")
	// ErrMalformedID: ParseID was given bytes that are not an id.
	ErrMalformedID = errors.New("replay: malformed id")
)

// Store is the log of one stream: the last frames, by sequence number.
//
// Concurrency: one writer (Append) and any number of concurrent readers.
// Cost: Append and Read are O(1) to locate a sequence, plus the bytes copied.
// Failure: Read never hands out bytes that a later Append can change; it
// copies into the caller's buffer.
type Store interface {
	// Append stores frame (copied) under seq, which must be newest+1 (the
	// first Append of an empty log may use any seq >= 1). It may evict the
	// oldest frames to stay within the frame count and the memory budget, but
	// always keeps the frame just appended.
	Append(seq uint64, frame []byte) error
	// Read appends to dst the frames with sequence > after, oldest first,
	// stopping before the total appended would exceed maxBytes (it always
	// appends at least one frame when one exists). It returns dst and the
	// sequence of the last frame appended (after itself when nothing newer
	// exists). Errors: ErrEvicted when frame after+1 is gone, ErrAhead when
	// after > newest.
	Read(after uint64, dst []byte, maxBytes int) ([]byte, uint64, error)
	// Bounds returns the oldest and newest sequence kept; on an empty log
	// oldest == newest+1.
	Bounds() (oldest, newest uint64)
	// Stats returns the number of frames held and the bytes their buffers
	// take.
	Stats() (frames int, bytes int64)
	// Close releases the memory and its budget; later calls fail or return
	// nothing.
	Close()
}
