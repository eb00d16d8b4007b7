package frame

import (
	"bytes"
	"errors"
	"io"
	"math"
)

const (
	defaultMaxFrame = 1 << 20
	readBufSize     = 8 << 10 // one per upstream stream: kept small, since session mode has one per client
	// maxEmptyReads is how many (0, nil) reads in a row count as a broken
	// reader, as in bufio.
	maxEmptyReads = 100
	bom           = "\xEF\xBB\xBF"
)

var errInvalidRead = errors.New("frame: reader returned an invalid count")

// state is where the parser stands within the current line.
type state uint8

const (
	stBOM        state = iota // at the very start of the stream, matching a BOM
	stLineStart               // at the start of a line
	stAfterCR                 // at the start of a line that follows a CR: an LF here is part of that line ending
	stName                    // in a field name
	stValueStart              // just after the colon: one space may be dropped
	stValue                   // in the value of a data, event, id or retry field
	stSkip                    // in a comment, an unknown field, or a line being discarded
)

// field is the field whose value is being read.
type field uint8

const (
	fieldNone field = iota // unknown field or comment
	fieldData
	fieldEvent
	fieldID
	fieldRetry
)

// Parser reads frames from a text/event-stream. It is a streaming state
// machine over a fixed read buffer: field values are copied straight into
// per-block buffers, so no line is ever held whole and a line ending split
// across two reads needs no look-ahead.
//
// Bytes are not UTF-8 decoded: invalid UTF-8 passes through unchanged.
//
// The zero Parser has no reader; it is ready after Reset and then uses the
// default maximum frame size. A Parser is not safe for concurrent use.
type Parser struct {
	rd       io.Reader
	maxFrame int

	buf  []byte // fixed read buffer, refilled only once fully consumed
	r, w int    // unread bytes are buf[r:w]
	lf   int    // index of the first LF in buf[r:w] (w if none); unknown when < r
	rerr error  // error from the last Read, returned once buf is drained

	st      state
	bomN    int     // BOM bytes matched so far, in stBOM
	lineLen int     // bytes of the current line so far, without its ending
	discard bool    // after ErrFrameTooLarge: skip lines up to the blank line ending the block
	name    [6]byte // one more than the longest known name, "event" or "retry"
	nameLen int
	field   field

	// The block being read. id holds the last valid id; idTmp the id being
	// read, which replaces it only if it turns out to hold no NUL.
	data, event, id, idTmp []byte
	dataLines              int // data fields in the block: each costs dataLineCost more once encoded
	hasData, hasID         bool
	hadField               bool // a data, event, valid id or valid retry field was seen
	retry                  int64
	retryVal               int64 // the retry value being read
	retryOK                bool  // all its bytes so far are digits
	retryDigits            bool  // it has at least one digit

	frame Frame

	beforeRead func()
}

// SetBeforeRead makes Next call fn each time it is about to read from the
// reader, which may block: the moment a caller that batches the frames it
// got so far (to write them on in one go) must send the batch. nil removes it.
func (p *Parser) SetBeforeRead(fn func()) { p.beforeRead = fn }

// NewParser returns a parser reading from r that bounds a frame to maxFrame
// bytes; maxFrame <= 0 means 1 MiB. A line longer than maxFrame bytes
// (without its line ending), or a block whose data (with the LFs that join
// its lines), event and id, plus dataLineCost for each data line, together
// exceed maxFrame, gives ErrFrameTooLarge. The block's data lines are thus
// counted about as AppendEvent writes them ("data: ", the line, LF): a block
// of many short lines cannot take several times maxFrame once encoded.
// r may be nil if Reset is called before Next.
func NewParser(r io.Reader, maxFrame int) *Parser {
	p := &Parser{maxFrame: maxFrame}
	p.Reset(r)
	return p
}

// Reset makes p read a new stream from r, keeping its buffers. Any block in
// progress is dropped and a BOM is again accepted at the start.
func (p *Parser) Reset(r io.Reader) {
	if p.maxFrame <= 0 {
		p.maxFrame = defaultMaxFrame
	}
	if p.buf == nil {
		p.buf = make([]byte, readBufSize)
	}
	p.rd = r
	p.r, p.w, p.lf, p.rerr = 0, 0, -1, nil
	p.st, p.bomN, p.lineLen, p.discard, p.field = stBOM, 0, 0, false, fieldNone
	p.resetBlock()
}

// Next returns the next block ended by a blank line that had at least one
// data, event, id or retry field; blocks with only comments or unknown fields
// are skipped. An id field holding a NUL and a retry field that is not all
// ASCII digits are ignored, as the spec says, and so count as unknown here.
// The returned Frame is owned by p and valid until the next call to Next or
// Reset.
//
// At the end of input Next returns io.EOF; a block cut by the end of input is
// discarded, not returned. ErrFrameTooLarge is not fatal (see its doc). Any
// other error from the reader is returned as is. Once the reader has failed
// or ended, every later call returns the same error.
func (p *Parser) Next() (*Frame, error) {
	for {
		if p.r == p.w {
			if p.rerr != nil {
				p.resetBlock()
				return nil, p.rerr
			}
			if p.beforeRead != nil {
				p.beforeRead()
			}
			p.fill()
			continue
		}
		if f, err := p.scan(); f != nil || err != nil {
			return f, err
		}
	}
}

// fill reads into the empty buffer. Bytes that come with an error are kept,
// and the error is reported only once they are consumed.
func (p *Parser) fill() {
	p.r, p.w, p.lf = 0, 0, -1
	for range maxEmptyReads {
		n, err := p.rd.Read(p.buf)
		if n < 0 || n > len(p.buf) {
			p.rerr = errInvalidRead
			return
		}
		p.w = n
		if err != nil {
			p.rerr = err
			return
		}
		if n > 0 {
			return
		}
	}
	p.rerr = io.ErrNoProgress
}

// scan consumes buf[r:w]. It returns a frame or ErrFrameTooLarge as soon as
// one is complete, or (nil, nil) once the buffer is drained.
func (p *Parser) scan() (*Frame, error) {
	for p.r < p.w {
		switch p.st {
		case stBOM:
			if p.buf[p.r] == bom[p.bomN] {
				p.r++
				if p.bomN++; p.bomN == len(bom) {
					p.st = stLineStart
				}
				continue
			}
			p.st = stLineStart
			if p.bomN > 0 {
				// Not a BOM after all: the bytes matched so far begin the
				// first field name.
				p.st = stName
				p.nameLen = copy(p.name[:], bom[:p.bomN])
				if !p.grow(p.bomN) {
					return p.tooLarge()
				}
			}

		case stAfterCR:
			if p.buf[p.r] == '\n' {
				p.r++
			}
			p.st = stLineStart

		case stLineStart:
			c := p.buf[p.r]
			if c == '\n' || c == '\r' {
				p.r++
				p.endLine(c)
				if f := p.endBlock(); f != nil {
					return f, nil
				}
				continue
			}
			if p.discard || c == ':' {
				// The colon of a comment stays unread so that stSkip counts
				// it in the line length.
				p.st = stSkip
				continue
			}
			p.st, p.nameLen = stName, 0

		case stName:
			// Names are short, so a byte loop beats searching for the end
			// of the line; past the longest known name the field is
			// unknown and the rest of the line is skipped, colon or not.
			i := p.r
			for i < p.w && p.nameLen+i-p.r < len(p.name) {
				if c := p.buf[i]; c == ':' || c == '\n' || c == '\r' {
					break
				}
				i++
			}
			n := i - p.r
			if !p.grow(n) {
				return p.tooLarge()
			}
			p.nameLen += copy(p.name[p.nameLen:], p.buf[p.r:i])
			p.r = i
			if p.nameLen == len(p.name) {
				p.st = stSkip
				continue
			}
			if i == p.w {
				continue // the name goes on in the next read
			}
			c := p.buf[i]
			p.r++
			f := p.lookup()
			if c == ':' {
				if !p.grow(1) || !p.startField(f) {
					return p.tooLarge()
				}
				p.st = stValueStart
				if f == fieldNone {
					p.st = stSkip
				}
				continue
			}
			// A field name without a colon has an empty value.
			ok := p.startField(f)
			p.endField()
			if !ok {
				p.tooLarge()
				p.endLine(c) // this line is over: discarding starts at the next
				return nil, ErrFrameTooLarge
			}
			p.endLine(c)

		case stValueStart:
			if p.buf[p.r] == ' ' {
				if !p.grow(1) {
					return p.tooLarge()
				}
				p.r++
			}
			p.st = stValue

		case stValue:
			e := p.eol()
			v := p.buf[p.r:e]
			if !p.grow(len(v)) || !p.appendValue(v) {
				return p.tooLarge()
			}
			p.r = e
			if e == p.w {
				continue
			}
			c := p.buf[e]
			p.r++
			p.endField()
			p.endLine(c)

		case stSkip:
			e := p.eol()
			if !p.discard && !p.grow(e-p.r) {
				return p.tooLarge()
			}
			p.r = e
			if e == p.w {
				continue
			}
			c := p.buf[e]
			p.r++
			p.field = fieldNone
			p.endLine(c)
		}
	}
	return nil, nil
}

// eol returns the index of the first CR or LF in buf[r:w], or w if none.
// The LF position is cached: a stream of CR-only line endings would
// otherwise rescan the whole buffer for an LF on every line.
func (p *Parser) eol() int {
	if p.lf < p.r {
		if k := bytes.IndexByte(p.buf[p.r:p.w], '\n'); k >= 0 {
			p.lf = p.r + k
		} else {
			p.lf = p.w
		}
	}
	if k := bytes.IndexByte(p.buf[p.r:p.lf], '\r'); k >= 0 {
		return p.r + k
	}
	return p.lf
}

// endLine moves to the next line after the line ending c.
func (p *Parser) endLine(c byte) {
	p.st, p.lineLen = stLineStart, 0
	if c == '\r' {
		p.st = stAfterCR
	}
}

// grow counts n more bytes of the current line against maxFrame.
func (p *Parser) grow(n int) bool {
	p.lineLen += n
	return p.lineLen <= p.maxFrame
}

func (p *Parser) lookup() field {
	switch string(p.name[:p.nameLen]) {
	case "data":
		return fieldData
	case "event":
		return fieldEvent
	case "id":
		return fieldID
	case "retry":
		return fieldRetry
	}
	return fieldNone
}

// startField begins the value of field f. It reports false if the LF that
// joins a second data line would make the block too large.
func (p *Parser) startField(f field) bool {
	p.field = f
	switch f {
	case fieldData:
		join := 0
		if p.hasData {
			join = 1
		}
		if !p.fits(join + dataLineCost) {
			return false
		}
		p.dataLines++
		if join > 0 {
			p.data = p.appendBounded(p.data, []byte{'\n'})
		}
		p.hasData, p.hadField = true, true
	case fieldEvent:
		// The last event field wins, even an empty one.
		p.event = p.event[:0]
		p.hadField = true
	case fieldID:
		p.idTmp = p.idTmp[:0]
	case fieldRetry:
		p.retryVal, p.retryOK, p.retryDigits = 0, true, false
	}
	return true
}

// endField applies the id and retry fields, which are valid only once their
// whole value is known.
func (p *Parser) endField() {
	switch p.field {
	case fieldID:
		if bytes.IndexByte(p.idTmp, 0) < 0 {
			p.id, p.idTmp = p.idTmp, p.id
			p.hasID, p.hadField = true, true
		}
	case fieldRetry:
		if p.retryOK && p.retryDigits {
			p.retry, p.hadField = p.retryVal, true
		}
	}
	p.field = fieldNone
}

// appendValue adds v to the value of the current field. It reports false if
// the block would grow beyond maxFrame.
func (p *Parser) appendValue(v []byte) bool {
	var dst *[]byte
	switch p.field {
	case fieldData:
		dst = &p.data
	case fieldEvent:
		dst = &p.event
	case fieldID:
		dst = &p.idTmp
	case fieldRetry:
		p.parseRetry(v)
		return true
	default:
		return true
	}
	if !p.fits(len(v)) {
		return false
	}
	*dst = p.appendBounded(*dst, v)
	return true
}

// fits reports whether n more bytes of the current field keep data, event
// and id within maxFrame. While an id is being read it stands in for the
// previous one, which it is about to replace.
func (p *Parser) fits(n int) bool {
	size := len(p.data) + len(p.event) + n + p.dataLines*dataLineCost
	if p.field == fieldID {
		size += len(p.idTmp)
	} else {
		size += len(p.id)
	}
	return size <= p.maxFrame
}

// appendBounded appends v to dst, capping the capacity at maxFrame so that a
// block near the limit does not make append double the memory held. The
// caller has checked that the result fits in maxFrame.
func (p *Parser) appendBounded(dst, v []byte) []byte {
	if need := len(dst) + len(v); need > cap(dst) {
		nb := make([]byte, len(dst), min(max(2*cap(dst), need, 256), p.maxFrame))
		copy(nb, dst)
		dst = nb
	}
	return append(dst, v...)
}

// parseRetry accumulates the digits of a retry value, saturating at
// math.MaxInt64, and marks it invalid at the first non-digit.
func (p *Parser) parseRetry(v []byte) {
	if !p.retryOK {
		return
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			p.retryOK = false
			return
		}
		p.retryDigits = true
		d := int64(c - '0')
		if p.retryVal > (math.MaxInt64-d)/10 {
			p.retryVal = math.MaxInt64
		} else {
			p.retryVal = p.retryVal*10 + d
		}
	}
}

// endBlock handles the blank line that ends a block, returning the frame to
// report, if any.
func (p *Parser) endBlock() *Frame {
	if p.discard {
		p.discard = false
		p.resetBlock()
		return nil
	}
	if !p.hadField {
		p.resetBlock()
		return nil
	}
	f := &p.frame
	*f = Frame{Event: p.event, Data: p.data, Retry: p.retry, HasID: p.hasID, Dispatch: p.hasData}
	if p.hasID {
		f.ID = p.id
	}
	// Only the lengths are reset: f keeps pointing at the bytes until the
	// next call overwrites them. A buffer that a giant frame grew is let go
	// (f keeps it until then) once a frame fills less than a quarter of it,
	// so a stream that got one giant frame does not hold its size for good,
	// and one that keeps getting big frames does not allocate per frame.
	p.data, p.event, p.id, p.idTmp = shrunk(p.data), shrunk(p.event), shrunk(p.id), shrunk(p.idTmp)
	p.resetBlock()
	return f
}

// shrunk is b, or nil when b is a big buffer mostly unused.
func shrunk(b []byte) []byte {
	if cap(b) > 64<<10 && len(b) < cap(b)/4 {
		return nil
	}
	return b
}

// tooLarge drops the block and skips the rest of it.
func (p *Parser) tooLarge() (*Frame, error) {
	p.discard, p.st, p.field = true, stSkip, fieldNone
	p.resetBlock()
	return nil, ErrFrameTooLarge
}

func (p *Parser) resetBlock() {
	p.data, p.event, p.id, p.idTmp = p.data[:0], p.event[:0], p.id[:0], p.idTmp[:0]
	p.hasData, p.hasID, p.hadField = false, false, false
	p.dataLines = 0
	p.retry = -1
}

// dataLineCost is what a data line takes beyond its bytes once encoded,
// "data: " (its LF is the joining LF the data already holds, or the one
// ending the block).
const dataLineCost = len("data: ")
