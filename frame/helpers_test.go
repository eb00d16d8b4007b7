package frame

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing/iotest"
)

// rec is a copy of one result of Next, comparable with ==.
type rec struct {
	Event, Data, ID string
	HasID           bool
	Retry           int64
	Dispatch        bool
	Err             string // "", errKindTooLarge, errKindEOF or the error text
}

const (
	errKindTooLarge = "too large"
	errKindEOF      = "EOF"
)

func (r rec) String() string {
	if r.Err != "" {
		return "<" + r.Err + ">"
	}
	return fmt.Sprintf("{event=%q data=%q id=%q hasID=%v retry=%d dispatch=%v}",
		r.Event, r.Data, r.ID, r.HasID, r.Retry, r.Dispatch)
}

// d is a dispatched frame with data only; the methods add the other fields.
func d(data string) rec       { return rec{Data: data, Retry: -1, Dispatch: true} }
func noData() rec             { return rec{Retry: -1} }
func (r rec) ev(e string) rec { r.Event = e; return r }
func (r rec) id(id string) rec {
	r.ID, r.HasID = id, true
	return r
}
func (r rec) retry(ms int64) rec { r.Retry = ms; return r }

var (
	tooLarge = rec{Err: errKindTooLarge}
	eof      = rec{Err: errKindEOF}
)

func errKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrFrameTooLarge):
		return errKindTooLarge
	case err == io.EOF:
		return errKindEOF
	}
	return err.Error()
}

func toRec(f *Frame, err error) rec {
	if err != nil {
		return rec{Err: errKind(err)}
	}
	return rec{
		Event: string(f.Event), Data: string(f.Data), ID: string(f.ID),
		HasID: f.HasID, Retry: f.Retry, Dispatch: f.Dispatch,
	}
}

// collect calls Next until a fatal error, copying each result. limit guards
// against a parser that never ends.
func collect(p *Parser, limit int) []rec {
	var out []rec
	for range limit {
		f, err := p.Next()
		out = append(out, toRec(f, err))
		if err != nil && err != ErrFrameTooLarge {
			return out
		}
	}
	return append(out, rec{Err: "collect: too many results"})
}

func parseAll(r io.Reader, maxFrame int) []rec {
	return collect(NewParser(r, maxFrame), 1<<20)
}

// oneByte returns at most one byte per Read, the worst case for a CR at the
// end of one read and its LF at the start of the next.
type oneByte struct{ s string }

func (r *oneByte) Read(b []byte) (int, error) {
	if len(r.s) == 0 {
		return 0, io.EOF
	}
	if len(b) == 0 {
		return 0, nil
	}
	b[0] = r.s[0]
	r.s = r.s[1:]
	return 1, nil
}

// splitReader returns chunks of pseudo-random size, and the final chunk
// together with io.EOF.
type splitReader struct {
	s   []byte
	rng *rand.Rand
	max int
}

func (r *splitReader) Read(b []byte) (int, error) {
	if len(r.s) == 0 {
		return 0, io.EOF
	}
	n := min(1+r.rng.IntN(r.max), len(b), len(r.s))
	copy(b, r.s[:n])
	r.s = r.s[n:]
	if len(r.s) == 0 {
		return n, io.EOF
	}
	return n, nil
}

// readers are the ways each table case is fed to the parser.
var readers = []struct {
	name string
	new  func(s string) io.Reader
}{
	{"whole", func(s string) io.Reader { return strings.NewReader(s) }},
	{"oneByte", func(s string) io.Reader { return &oneByte{s} }},
	{"iotest.OneByteReader", func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) }},
	{"iotest.HalfReader", func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) }},
	{"iotest.DataErrReader", func(s string) io.Reader {
		return iotest.DataErrReader(iotest.OneByteReader(strings.NewReader(s)))
	}},
	{"split3", func(s string) io.Reader {
		return &splitReader{s: []byte(s), rng: rand.New(rand.NewPCG(1, uint64(len(s)))), max: 3}
	}},
}

// repeatReader returns the same bytes over and over, n times (forever if n < 0).
type repeatReader struct {
	b   []byte
	off int
	n   int
}

func (r *repeatReader) Read(b []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	n := copy(b, r.b[r.off:])
	r.off += n
	if r.off == len(r.b) {
		r.off = 0
		if r.n > 0 {
			r.n--
		}
	}
	return n, nil
}
