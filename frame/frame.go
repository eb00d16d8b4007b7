// Package frame implements the text/event-stream wire format: a pull parser
// that follows the WHATWG "event stream interpretation" rules and
// append-style encoders. It uses the standard library only and does no
// network I/O.
//
// Spec: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
package frame

import "errors"

// ErrFrameTooLarge is returned by Parser.Next when a single line, or the
// data, event and id fields of one block together, exceed the parser's
// maximum frame size. It is not fatal: the parser discards the rest of that
// block (up to and including the blank line that ends it) and the next call
// to Next continues with the following block.
var ErrFrameTooLarge = errors.New("frame: frame exceeds the maximum size")

// Frame is one block of fields ended by a blank line.
//
// The byte slices point into the Parser's internal buffers and are valid only
// until the next call to Next or Reset, in the way bufio.Scanner.Bytes is.
// Callers that keep a field must copy it.
type Frame struct {
	// Event is the value of the last event field of the block; empty means
	// the default type, "message".
	Event []byte
	// Data is the block's data fields joined by LF, without the final LF.
	// It is meaningful only when Dispatch is true.
	Data []byte
	// ID is the value of the last id field of the block whose value holds no
	// NUL; valid only when HasID is true. An empty ID with HasID true resets
	// the last event id, as the spec says.
	ID    []byte
	HasID bool
	// Retry is the value in milliseconds of the last retry field of the block
	// made of ASCII digits only, or -1 when there was none. Values that do not
	// fit in an int64 saturate at math.MaxInt64.
	Retry int64
	// Dispatch reports whether the block had at least one data field, that is
	// whether an EventSource dispatches an event for it.
	Dispatch bool
}
