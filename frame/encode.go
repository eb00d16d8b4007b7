package frame

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
)

// eventOverhead is room for the field names, the line endings and a retry
// value, so that AppendEvent grows dst at most once for single-line data.
const eventOverhead = len("id: \nevent: \nretry: \ndata: \n\n") + 20

// AppendEvent appends one complete frame for f with LF line endings, in this
// order, and returns the extended buffer:
//
//	id: <id>           if len(id) > 0 (f.ID is not used: the caller picks the id)
//	event: <f.Event>   if len(f.Event) > 0
//	retry: <f.Retry>   if f.Retry >= 0 (the zero Frame has Retry 0: set -1 to omit it)
//	data: <line>       for every line of f.Data, at least one
//	(blank line)
//
// Parsing the output gives back the same Event, Data, Retry and id for any
// frame the Parser returns. A line ending cannot be represented inside a
// field value, so that the output is always exactly one frame: CR and LF are
// dropped from id and Event, and in Data CR, LF and CRLF all separate lines.
// A NUL in id is written as is, and clients then ignore the id.
//
// AppendEvent does not allocate when dst has room.
func AppendEvent(dst, id []byte, f *Frame) []byte {
	dst = slices.Grow(dst, len(id)+len(f.Event)+len(f.Data)+eventOverhead)
	if len(id) > 0 {
		dst = append(dst, "id: "...)
		dst = appendOneLine(dst, id)
		dst = append(dst, '\n')
	}
	if len(f.Event) > 0 {
		dst = append(dst, "event: "...)
		dst = appendOneLine(dst, f.Event)
		dst = append(dst, '\n')
	}
	dst = AppendRetry(dst, f.Retry)

	data := f.Data
	start := 0
	lf := -1 // index of the first LF at or after start (len(data) if none); unknown when < start
	for {
		// The LF position is cached so that data split by CRs alone is not
		// rescanned for an LF on every line.
		if lf < start {
			if k := bytes.IndexByte(data[start:], '\n'); k >= 0 {
				lf = start + k
			} else {
				lf = len(data)
			}
		}
		end := lf
		if k := bytes.IndexByte(data[start:lf], '\r'); k >= 0 {
			end = start + k
		}
		dst = append(dst, "data: "...)
		dst = append(dst, data[start:end]...)
		dst = append(dst, '\n')
		if end == len(data) {
			break
		}
		start = end + 1
		if data[end] == '\r' && start < len(data) && data[start] == '\n' {
			start++
		}
	}
	return append(dst, '\n')
}

// appendOneLine appends v without its CR and LF bytes. Ids and event types
// are short, where a byte loop beats bytes.IndexAny.
func appendOneLine(dst, v []byte) []byte {
	start := 0
	for i, c := range v {
		if c == '\r' || c == '\n' {
			dst = append(dst, v[start:i]...)
			start = i + 1
		}
	}
	return append(dst, v[start:]...)
}

// AppendComment appends a comment block, ": <text>\n\n", which clients
// ignore; a heartbeat is one. CR, LF or CRLF in text start a new ": " line,
// so that text can never end the block early or inject a field.
func AppendComment(dst []byte, text string) []byte {
	for {
		dst = append(dst, ": "...)
		i := strings.IndexAny(text, "\r\n")
		if i < 0 {
			dst = append(dst, text...)
			break
		}
		dst = append(dst, text[:i]...)
		dst = append(dst, '\n')
		if text[i] == '\r' && i+1 < len(text) && text[i+1] == '\n' {
			i++
		}
		text = text[i+1:]
	}
	return append(dst, "\n\n"...)
}

// AppendRetry appends the field "retry: <ms>\n", without the blank line that
// would end a block. A negative ms appends nothing, as Frame.Retry -1 means
// no retry field.
func AppendRetry(dst []byte, ms int64) []byte {
	if ms < 0 {
		return dst
	}
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, ms, 10)
	return append(dst, '\n')
}
