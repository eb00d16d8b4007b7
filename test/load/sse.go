package load

import (
	"bytes"
	"errors"
	"strconv"
)

// The swarm reads raw TCP: these are the few pieces of HTTP/1.1 and SSE it
// needs, kept light so that 10,000 connections cost little of the shared CPU.

// Event is one dispatched SSE event as the swarm sees it. Its slices are
// valid only during the callback that receives it.
type Event struct {
	Type  []byte // the event: field, empty for "message"
	Data  []byte // data lines joined by LF
	ID    []byte // the id: field of this event, when HasID
	HasID bool
}

// SSEParser is a light text/event-stream parser: LF or CRLF line endings,
// comments, data/event/id fields (retry and unknown fields are ignored). It
// does no BOM handling and no bounds: the servers under test are trusted.
type SSEParser struct {
	line    []byte // a partial line carried over from the previous Feed
	ev      Event
	hasData bool
}

// Feed parses b, calling emit for every event completed in it.
func (p *SSEParser) Feed(b []byte, emit func(*Event)) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.line = append(p.line, b...)
			return
		}
		line := b[:i]
		if len(p.line) > 0 {
			p.line = append(p.line, line...)
			line = p.line
		}
		b = b[i+1:]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		p.handleLine(line, emit)
		p.line = p.line[:0]
	}
}

func (p *SSEParser) handleLine(line []byte, emit func(*Event)) {
	if len(line) == 0 {
		if p.hasData || len(p.ev.Type) > 0 {
			emit(&p.ev)
		}
		p.ev.Data, p.ev.Type, p.ev.HasID, p.hasData = p.ev.Data[:0], p.ev.Type[:0], false, false
		return
	}
	if line[0] == ':' {
		return // comment (heartbeat)
	}
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "data":
		if p.hasData {
			p.ev.Data = append(p.ev.Data, '\n')
		}
		p.ev.Data = append(p.ev.Data, value...)
		p.hasData = true
	case "event":
		p.ev.Type = append(p.ev.Type[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.ev.ID = append(p.ev.ID[:0], value...)
			p.ev.HasID = true
		}
	}
}

// ChunkedDecoder undoes HTTP/1.1 chunked transfer coding incrementally.
type ChunkedDecoder struct {
	st   uint8
	size int64
}

const (
	chSize   uint8 = iota // hex digits of a chunk size
	chExt                 // chunk extension or spaces, up to LF
	chData                // size bytes of data left
	chDataCR              // CR (or LF) after the data
	chDataLF              // LF after the data's CR
	chDone                // after the last (zero) chunk
)

var errBadChunk = errors.New("load: malformed chunked encoding")

// Feed decodes b, calling out with each piece of body data (a sub-slice of
// b). done is true once the terminating zero-size chunk has been read.
func (d *ChunkedDecoder) Feed(b []byte, out func([]byte)) (done bool, err error) {
	for len(b) > 0 {
		switch d.st {
		case chDone:
			return true, nil
		case chSize:
			c := b[0]
			switch {
			case c >= '0' && c <= '9':
				d.size = d.size<<4 | int64(c-'0')
			case c >= 'a' && c <= 'f':
				d.size = d.size<<4 | int64(c-'a'+10)
			case c >= 'A' && c <= 'F':
				d.size = d.size<<4 | int64(c-'A'+10)
			case c == '\n':
				d.endSizeLine()
			case c == ';' || c == ' ' || c == '\t' || c == '\r':
				d.st = chExt
			default:
				return false, errBadChunk
			}
			if d.size > 1<<40 {
				return false, errBadChunk
			}
			b = b[1:]
		case chExt:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				return false, nil
			}
			b = b[i+1:]
			d.endSizeLine()
		case chData:
			n := int64(len(b))
			if n > d.size {
				n = d.size
			}
			out(b[:n])
			b = b[n:]
			d.size -= n
			if d.size == 0 {
				d.st = chDataCR
			}
		case chDataCR:
			switch b[0] {
			case '\r':
				d.st = chDataLF
			case '\n':
				d.st = chSize
			default:
				return false, errBadChunk
			}
			b = b[1:]
		case chDataLF:
			if b[0] != '\n' {
				return false, errBadChunk
			}
			d.st = chSize
			b = b[1:]
		}
	}
	return d.st == chDone, nil
}

func (d *ChunkedDecoder) endSizeLine() {
	if d.size == 0 {
		d.st = chDone // trailers, if any, are not read
		return
	}
	d.st = chData
}

// ResponseHead is what the swarm reads of a response header.
type ResponseHead struct {
	Status  int
	Chunked bool
	Length  int64 // Content-Length, -1 when absent
}

var errBadHead = errors.New("load: malformed HTTP response head")

// ParseResponseHead parses b, which must end with the blank line (CRLF CRLF
// or LF LF) of the response head.
func ParseResponseHead(b []byte) (ResponseHead, error) {
	h := ResponseHead{Length: -1}
	first := true
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			i = len(b)
		}
		line := bytes.TrimRight(b[:i], "\r")
		b = b[min(i+1, len(b)):]
		if first {
			first = false
			// HTTP/1.1 200 OK
			parts := bytes.SplitN(line, []byte(" "), 3)
			if len(parts) < 2 || !bytes.HasPrefix(parts[0], []byte("HTTP/1.")) {
				return h, errBadHead
			}
			code, err := strconv.Atoi(string(parts[1]))
			if err != nil {
				return h, errBadHead
			}
			h.Status = code
			continue
		}
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return h, errBadHead
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(bytes.TrimSpace(k), []byte("Transfer-Encoding")):
			h.Chunked = bytes.Contains(bytes.ToLower(v), []byte("chunked"))
		case bytes.EqualFold(bytes.TrimSpace(k), []byte("Content-Length")):
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				return h, errBadHead
			}
			h.Length = n
		}
	}
	if first {
		return h, errBadHead
	}
	return h, nil
}

// HeadEnd returns the length of the response head in b including its blank
// line, or -1 when b does not hold all of it yet.
func HeadEnd(b []byte) int {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return i + 2
	}
	return -1
}

// The generator's event data is "<seq> <send time, ns since the epoch> <padding>",
// padded with 'x' to the payload size.

// AppendPayload appends the data value of event seq sent at sendNs, padded
// to size bytes when it is shorter.
func AppendPayload(dst []byte, seq, sendNs int64, size int) []byte {
	start := len(dst)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, sendNs, 10)
	if pad := size - (len(dst) - start) - 1; pad > 0 {
		dst = append(dst, ' ')
		for range pad {
			dst = append(dst, 'x')
		}
	}
	return dst
}

// ParsePayload reads seq and the send time back from a data value.
func ParsePayload(b []byte) (seq, sendNs int64, ok bool) {
	seq, b, ok = leadingInt(b)
	if !ok || len(b) == 0 || b[0] != ' ' {
		return 0, 0, false
	}
	sendNs, _, ok = leadingInt(b[1:])
	return seq, sendNs, ok
}

func leadingInt(b []byte) (int64, []byte, bool) {
	var n int64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if i >= 19 { // more than int64 holds
			return 0, b, false
		}
		n = n*10 + int64(b[i]-'0')
	}
	return n, b[i:], i > 0
}
