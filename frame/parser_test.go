package frame

import (
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// parserCases follow the rules of
// https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
// Every case runs with every reader in readers, so each line ending and
// field also crosses read boundaries.
var parserCases = []struct {
	name     string
	in       string
	maxFrame int // 0: the default
	want     []rec
}{
	{"empty input", "", 0, []rec{eof}},
	{"simple", "data: hello\n\n", 0, []rec{d("hello"), eof}},

	// Spec examples.
	{"spec stock example", "data: YHOO\ndata: +2\ndata: 10\n\n", 0, []rec{d("YHOO\n+2\n10"), eof}},
	{"spec four blocks",
		": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n", 0,
		[]rec{d("first event").id("1"), d("second event").id(""), d(" third event"), eof}},
	{"spec empty and newline data", "data\n\ndata\ndata\n\ndata:", 0, []rec{d(""), d("\n"), eof}},
	{"spec space optional", "data:test\n\ndata: test\n\n", 0, []rec{d("test"), d("test"), eof}},

	// Line endings.
	{"LF", "data: a\ndata: b\n\n", 0, []rec{d("a\nb"), eof}},
	{"CR", "data: a\rdata: b\r\r", 0, []rec{d("a\nb"), eof}},
	{"CRLF", "data: a\r\ndata: b\r\n\r\n", 0, []rec{d("a\nb"), eof}},
	{"mixed", "data: a\rdata: b\ndata: c\r\ndata: d\r\n\n", 0, []rec{d("a\nb\nc\nd"), eof}},
	{"CRLF is one ending between blocks", "data: a\r\n\r\ndata: b\r\n\r\n", 0, []rec{d("a"), d("b"), eof}},
	{"CR then CRLF", "data: a\r\r\ndata: b\n\n", 0, []rec{d("a"), d("b"), eof}},
	{"LF then CR", "data: a\n\rdata: b\n\n", 0, []rec{d("a"), d("b"), eof}},
	{"LF CR LF is two endings", "data: a\n\r\ndata: b\n\n", 0, []rec{d("a"), d("b"), eof}},
	{"CRLF after blank LF", "data: a\n\n\r\ndata: b\n\n", 0, []rec{d("a"), d("b"), eof}},
	{"dispatch at CR without waiting for LF", "data: a\r\r", 0, []rec{d("a"), eof}},
	{"many blank lines", "\n\r\n\r\ndata: x\n\n\n\r\r\n", 0, []rec{d("x"), eof}},

	// Fields and values.
	{"no space after colon", "data:x\n\n", 0, []rec{d("x"), eof}},
	{"one space stripped only once", "data:  x\n\n", 0, []rec{d(" x"), eof}},
	{"three spaces", "data:   x\n\n", 0, []rec{d("  x"), eof}},
	{"tab is not stripped", "data:\tx\n\n", 0, []rec{d("\tx"), eof}},
	{"trailing space kept", "data: x \n\n", 0, []rec{d("x "), eof}},
	{"value with colons", "data: a: b:c\n\n", 0, []rec{d("a: b:c"), eof}},
	{"field without colon", "data\n\n", 0, []rec{d(""), eof}},
	{"empty value", "data:\n\n", 0, []rec{d(""), eof}},
	{"value is one space", "data: \n\n", 0, []rec{d(""), eof}},
	{"empty data lines join", "data\ndata\ndata\n\n", 0, []rec{d("\n\n"), eof}},
	{"empty data line keeps trailing LF", "data: a\ndata\n\n", 0, []rec{d("a\n"), eof}},
	{"field names are case sensitive", "Data: x\n\n", 0, []rec{eof}},
	{"space before colon makes another field", "data : x\n\n", 0, []rec{eof}},
	{"leading space makes another field", " data: x\n\n", 0, []rec{eof}},
	{"longer name", "datas: x\ndatadata: y\n\n", 0, []rec{eof}},
	{"prefix name", "dat: x\nd\n\n", 0, []rec{eof}},
	{"unknown fields ignored", "foo: bar\ndata: x\nfoo\nidd: 3\n\n", 0, []rec{d("x"), eof}},
	{"NUL in data kept", "data: a\x00b\n\n", 0, []rec{d("a\x00b"), eof}},
	{"invalid UTF-8 passes through", "data: \xff\xfe\n\n", 0, []rec{d("\xff\xfe"), eof}},

	// Comments.
	{"comment only block skipped", ": hi\n\n:\n\n", 0, []rec{eof}},
	{"comment between data lines", "data: a\n: c\ndata: b\n\n", 0, []rec{d("a\nb"), eof}},
	{"comment looking like a field", ":data: x\n\n", 0, []rec{eof}},
	{"comment with CR", ": a\r: b\rdata: x\r\r", 0, []rec{d("x"), eof}},

	// event.
	{"event", "event: add\ndata: x\n\n", 0, []rec{d("x").ev("add"), eof}},
	{"last event wins", "event: a\nevent: b\ndata: x\n\n", 0, []rec{d("x").ev("b"), eof}},
	{"empty event resets type", "event: a\nevent\ndata: x\n\n", 0, []rec{d("x"), eof}},
	{"event without data", "event: a\n\ndata: x\n\n", 0, []rec{noData().ev("a"), d("x"), eof}},
	{"event is per block", "event: a\ndata: x\n\ndata: y\n\n", 0, []rec{d("x").ev("a"), d("y"), eof}},

	// id.
	{"id", "id: 7\ndata: x\n\n", 0, []rec{d("x").id("7"), eof}},
	{"id without data", "id: 7\n\n", 0, []rec{noData().id("7"), eof}},
	{"empty id resets", "id\n\nid:\n\nid: \n\n", 0, []rec{noData().id(""), noData().id(""), noData().id(""), eof}},
	{"id with NUL ignored", "id: a\x00b\ndata: x\n\n", 0, []rec{d("x"), eof}},
	{"id with NUL keeps earlier id", "id: 1\nid: \x002\ndata: x\n\n", 0, []rec{d("x").id("1"), eof}},
	{"only a NUL id: block skipped", "id: \x00\n\n", 0, []rec{eof}},
	{"last id wins", "id: 1\nid: 2\ndata: x\n\n", 0, []rec{d("x").id("2"), eof}},
	{"id is per block", "id: 1\ndata: x\n\ndata: y\n\n", 0, []rec{d("x").id("1"), d("y"), eof}},
	{"id leading space once", "id:  1\n\n", 0, []rec{noData().id(" 1"), eof}},

	// retry.
	{"retry", "retry: 1000\n\n", 0, []rec{noData().retry(1000), eof}},
	{"retry with data", "retry: 5\ndata: x\n\n", 0, []rec{d("x").retry(5), eof}},
	{"retry zero", "retry: 0\n\n", 0, []rec{noData().retry(0), eof}},
	{"retry leading zeros", "retry:007\n\n", 0, []rec{noData().retry(7), eof}},
	{"retry not digits", "retry: 12a\n\n", 0, []rec{eof}},
	{"retry empty", "retry\n\nretry:\n\nretry: \n\n", 0, []rec{eof}},
	{"retry extra space", "retry:  5\n\n", 0, []rec{eof}},
	{"retry sign", "retry: -1\n\nretry: +1\n\n", 0, []rec{eof}},
	{"retry decimal", "retry: 1.5\n\n", 0, []rec{eof}},
	{"retry non-ASCII digit", "retry: \uff11\n\n", 0, []rec{eof}},
	{"retry max int64", "retry: 9223372036854775807\n\n", 0, []rec{noData().retry(math.MaxInt64), eof}},
	{"retry saturates", "retry: 9223372036854775808\n\nretry: 99999999999999999999999999999\n\n", 0,
		[]rec{noData().retry(math.MaxInt64), noData().retry(math.MaxInt64), eof}},
	{"invalid retry keeps earlier", "retry: 1\nretry: x\ndata: y\n\n", 0, []rec{d("y").retry(1), eof}},
	{"last retry wins", "retry: 1\nretry: 2\n\n", 0, []rec{noData().retry(2), eof}},
	{"retry is per block", "retry: 1\ndata: x\n\ndata: y\n\n", 0, []rec{d("x").retry(1), d("y"), eof}},

	// BOM.
	{"BOM at start", "\xEF\xBB\xBFdata: x\n\n", 0, []rec{d("x"), eof}},
	{"BOM then blank line", "\xEF\xBB\xBF\ndata: x\n\n", 0, []rec{d("x"), eof}},
	{"BOM then comment", "\xEF\xBB\xBF: c\n\n", 0, []rec{eof}},
	{"BOM only", "\xEF\xBB\xBF", 0, []rec{eof}},
	{"second BOM is part of the name", "\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n", 0, []rec{eof}},
	{"BOM later is part of the name", "data: x\n\n\xEF\xBB\xBFdata: y\n\n", 0, []rec{d("x"), eof}},
	{"BOM in a value is data", "data: \xEF\xBB\xBFx\n\n", 0, []rec{d("\xEF\xBB\xBFx"), eof}},
	{"partial BOM is part of the name", "\xEF\xBBdata: x\n\n", 0, []rec{eof}},
	{"partial BOM then colon", "\xEF: x\ndata: y\n\n", 0, []rec{d("y"), eof}},
	{"partial BOM then LF", "\xEF\xBB\ndata: y\n\n", 0, []rec{d("y"), eof}},

	// End of input.
	{"no blank line at EOF", "data: x\n", 0, []rec{eof}},
	{"no line ending at EOF", "data: x", 0, []rec{eof}},
	{"CR at EOF ends only the line", "data: x\r", 0, []rec{eof}},
	{"second block cut", "data: x\n\ndata: y\n", 0, []rec{d("x"), eof}},
	{"id cut by EOF", "id: 1\n", 0, []rec{eof}},
	{"retry cut by EOF", "retry: 1\n", 0, []rec{eof}},

	// Size bound: a line, or data+event+id of a block, with 6 bytes for
	// each data line ("data: " once encoded), over maxFrame.
	{"line at the limit", "data: 0123456789\n\n", 16, []rec{d("0123456789"), eof}},
	{"line over the limit", "data: 0123456789A\n\ndata: ok\n\n", 16, []rec{tooLarge, d("ok"), eof}},
	{"name over the limit", "0123456789ABCDEFG\n\ndata: ok\n\n", 16, []rec{tooLarge, d("ok"), eof}},
	{"comment over the limit", ": 0123456789ABCDE\n\ndata: ok\n\n", 16, []rec{tooLarge, d("ok"), eof}},
	{"unknown field over the limit", "x: 0123456789ABCD\n\ndata: ok\n\n", 16, []rec{tooLarge, d("ok"), eof}},
	{"space counts in the line", "data:  0123456789\n\n", 16, []rec{tooLarge, eof}},
	{"data at the limit", "data: 01\ndata: 0\n\n", 16, []rec{d("01\n0"), eof}},
	{"data over the limit", "data: 01\ndata: 01\n\ndata: ok\n\n", 16, []rec{tooLarge, d("ok"), eof}},
	{"joining LF over the limit", "data:012\ndata:01\ndata\n\ndata: ok\n\n", 24, []rec{tooLarge, d("ok"), eof}},
	{"joining LF at the limit", "data:012\ndata:0\ndata\n\n", 24, []rec{d("012\n0\n"), eof}},
	{"short lines count as encoded", "data\ndata\ndata\n\ndata: ok\n\n", 16, []rec{tooLarge, d("ok"), eof}},
	{"event id data at the limit", "event: 01234\nid: 0123\ndata: 0\n\n", 16,
		[]rec{d("0").ev("01234").id("0123"), eof}},
	{"event id data over the limit", "event: 01234\nid: 0123\ndata: 01\n\ndata: ok\n\n", 16,
		[]rec{tooLarge, d("ok"), eof}},
	{"event over the limit", "data: 0123456789\nevent: 0123456\n\ndata: ok\n\n", 16, []rec{tooLarge, d("ok"), eof}},
	{"id over the limit", "data: 0123456789\nid: 0123456\n\ndata: ok\n\n", 16, []rec{tooLarge, d("ok"), eof}},
	{"NUL id over the limit", "data: 0123456789\nid: 012345\x00\n\ndata: ok\n\n", 16, []rec{tooLarge, d("ok"), eof}},
	{"replaced event does not count", "event:0123456789\nevent: a\ndata: 012345678\n\n", 16,
		[]rec{d("012345678").ev("a"), eof}},
	{"replaced id does not count", "id: 0123456789\nid: a\ndata: 012345678\n\n", 16,
		[]rec{d("012345678").id("a"), eof}},
	{"retry does not count", "retry: 1000\ndata: 0123456789\n\n", 16, []rec{d("0123456789").retry(1000), eof}},
	{"discarded block leaks nothing", "id: 1\nevent: e\nretry: 9\ndata: 0123456789ABCDEF\nid: 2\ndata: z\n\ndata: ok\n\n", 16,
		[]rec{tooLarge, d("ok"), eof}},
	{"two oversized blocks", "data: 0123456789ABCDEF\n\ndata: 0123456789ABCDEF\n\ndata: ok\n\n", 16,
		[]rec{tooLarge, tooLarge, d("ok"), eof}},
	{"oversized block with CR endings", "data: 0123456789ABCDEF\rdata: z\r\rdata: ok\r\r", 16,
		[]rec{tooLarge, d("ok"), eof}},
	{"oversized block with CRLF endings", "data: 0123456789ABCDEF\r\n\r\ndata: ok\r\n\r\n", 16,
		[]rec{tooLarge, d("ok"), eof}},
	{"oversized block cut by EOF", "data: ok\n\ndata: 0123456789ABCDEFGHIJ", 16, []rec{d("ok"), tooLarge, eof}},
	{"frame before the oversized one is returned", "data: a\n\ndata: 0123456789ABCDEF\n\n", 16,
		[]rec{d("a"), tooLarge, eof}},
	{"oversized data then comment blank", "data: 0123456789ABCDEF\n: c\n\ndata: ok\n\n", 16,
		[]rec{tooLarge, d("ok"), eof}},
	{"tiny maxFrame", "data\n\nd\n\nda\n\n", 1, []rec{tooLarge, tooLarge, eof}},
	{"tiny maxFrame with partial BOM", "\xEF\xBBx\n\ndata\n\n", 1, []rec{tooLarge, tooLarge, eof}},
}

func TestParser(t *testing.T) {
	for _, tc := range parserCases {
		for _, rd := range readers {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				got := parseAll(rd.new(tc.in), tc.maxFrame)
				if !slices.Equal(got, tc.want) {
					t.Errorf("input %q, maxFrame %d\n got %v\nwant %v", tc.in, tc.maxFrame, got, tc.want)
				}
			})
		}
	}
}

// TestParserCRAtReadBoundary pins the case every one-byte reader above
// covers, with the split placed exactly between CR and LF.
func TestParserCRAtReadBoundary(t *testing.T) {
	in := "data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"
	for i := 1; i < len(in); i++ {
		r := io.MultiReader(strings.NewReader(in[:i]), strings.NewReader(in[i:]))
		got := parseAll(r, 0)
		want := []rec{d("a\nb"), d("c"), eof}
		if !slices.Equal(got, want) {
			t.Fatalf("split at %d (%q | %q): got %v, want %v", i, in[:i], in[i:], got, want)
		}
	}
}

func TestParserDefaultMaxFrame(t *testing.T) {
	for _, maxFrame := range []int{0, -1} {
		fits := "data: " + strings.Repeat("x", defaultMaxFrame-len("data: ")) + "\n\n"
		over := "data: " + strings.Repeat("x", defaultMaxFrame) + "\n\n"
		got := parseAll(strings.NewReader(fits+over+"data: ok\n\n"), maxFrame)
		if len(got) != 4 || got[0].Data != fits[6:len(fits)-2] || got[1] != tooLarge || got[2] != d("ok") || got[3] != eof {
			t.Errorf("maxFrame %d: got %d results, first %.40v", maxFrame, len(got), got)
		}
	}
}

// TestParserFrameSlices checks that Frame points at buffers that the next
// call reuses, and that what it held was right until then.
func TestParserFrameSlices(t *testing.T) {
	p := NewParser(strings.NewReader("event: e1\nid: i1\ndata: one\n\nevent: e2\nid: i2\ndata: two\n\n"), 0)
	f1, err := p.Next()
	if err != nil || string(f1.Data) != "one" || string(f1.Event) != "e1" || string(f1.ID) != "i1" {
		t.Fatalf("first: %v %v", toRec(f1, err), err)
	}
	f2, err := p.Next()
	if err != nil || string(f2.Data) != "two" || string(f2.Event) != "e2" || string(f2.ID) != "i2" {
		t.Fatalf("second: %v %v", toRec(f2, err), err)
	}
	if f1 != f2 {
		t.Error("Next returned a new Frame; want the parser's own, reused")
	}
}

func TestParserReset(t *testing.T) {
	p := NewParser(strings.NewReader("\xEF\xBB\xBFdata: a\n\ndata: cut"), 16)
	if got := collect(p, 10); !slices.Equal(got, []rec{d("a"), eof}) {
		t.Fatalf("first stream: %v", got)
	}
	// After Reset a BOM is stripped again and the cut block is gone.
	p.Reset(strings.NewReader("\xEF\xBB\xBFdata: b\n\n"))
	if got := collect(p, 10); !slices.Equal(got, []rec{d("b"), eof}) {
		t.Fatalf("after Reset: %v", got)
	}
	// Reset in the middle of an oversized block: the new stream is not discarded.
	p.Reset(strings.NewReader("data: 0123456789ABCDEF\ndata: x\n\n"))
	if f, err := p.Next(); err != ErrFrameTooLarge {
		t.Fatalf("oversized: %v %v", toRec(f, err), err)
	}
	p.Reset(strings.NewReader("data: c\n\n"))
	if got := collect(p, 10); !slices.Equal(got, []rec{d("c"), eof}) {
		t.Fatalf("after Reset in a discarded block: %v", got)
	}
	// Reset in the middle of a line with a pending CR.
	p.Reset(strings.NewReader("data: x\r"))
	if got := collect(p, 10); !slices.Equal(got, []rec{eof}) {
		t.Fatalf("CR stream: %v", got)
	}
	p.Reset(strings.NewReader("\ndata: d\n\n"))
	if got := collect(p, 10); !slices.Equal(got, []rec{d("d"), eof}) {
		t.Fatalf("after Reset following a CR: %v", got)
	}
}

func TestParserZeroValue(t *testing.T) {
	var p Parser
	p.Reset(strings.NewReader("data: x\n\n"))
	if got := collect(&p, 10); !slices.Equal(got, []rec{d("x"), eof}) {
		t.Fatalf("zero Parser after Reset: %v", got)
	}
	if p.maxFrame != defaultMaxFrame {
		t.Errorf("maxFrame = %d, want the default", p.maxFrame)
	}
}

// errReader returns s, then err.
type errReader struct {
	s   string
	err error
}

func (r *errReader) Read(b []byte) (int, error) {
	if len(r.s) == 0 {
		return 0, r.err
	}
	n := copy(b, r.s)
	r.s = r.s[n:]
	return n, nil
}

func TestParserReaderError(t *testing.T) {
	for _, rd := range []struct {
		name string
		r    io.Reader
	}{
		{"after data", &errReader{"data: x\n\ndata: cut", io.ErrUnexpectedEOF}},
		{"with data", iotest.DataErrReader(&errReader{"data: x\n\ndata: cut", io.ErrUnexpectedEOF})},
	} {
		t.Run(rd.name, func(t *testing.T) {
			p := NewParser(rd.r, 0)
			if f, err := p.Next(); err != nil || string(f.Data) != "x" {
				t.Fatalf("first: %v %v", toRec(f, err), err)
			}
			for range 3 { // the error sticks
				if f, err := p.Next(); err != io.ErrUnexpectedEOF || f != nil {
					t.Fatalf("got %v %v, want io.ErrUnexpectedEOF as is", f, err)
				}
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		p := NewParser(iotest.TimeoutReader(strings.NewReader("data: x\n\n")), 0)
		if f, err := p.Next(); err != nil || string(f.Data) != "x" {
			t.Fatalf("first: %v %v", toRec(f, err), err)
		}
		if _, err := p.Next(); err != iotest.ErrTimeout {
			t.Fatalf("got %v, want iotest.ErrTimeout", err)
		}
	})
	t.Run("EOF sticks", func(t *testing.T) {
		p := NewParser(strings.NewReader("data: x\n\n"), 0)
		p.Next()
		for range 3 {
			if _, err := p.Next(); err != io.EOF {
				t.Fatalf("got %v, want io.EOF", err)
			}
		}
	})
}

type emptyReader struct{ reads int }

func (r *emptyReader) Read([]byte) (int, error) { r.reads++; return 0, nil }

type badReader struct{ n int }

func (r badReader) Read([]byte) (int, error) { return r.n, nil }

func TestParserBrokenReader(t *testing.T) {
	r := &emptyReader{}
	if _, err := NewParser(r, 0).Next(); err != io.ErrNoProgress {
		t.Errorf("endless (0, nil): got %v, want io.ErrNoProgress", err)
	}
	if r.reads != maxEmptyReads {
		t.Errorf("reads = %d, want %d", r.reads, maxEmptyReads)
	}
	for _, n := range []int{-1, readBufSize + 1} {
		if _, err := NewParser(badReader{n}, 0).Next(); err == nil || err == io.EOF {
			t.Errorf("Read returning %d: got %v, want an error", n, err)
		}
	}
}

// lines returns a reader of count copies of line.
func lines(line string, count int) io.Reader {
	return &repeatReader{b: []byte(line), n: count}
}

// TestParserBounded feeds streams that never end a block, far larger than
// maxFrame: one ErrFrameTooLarge at most, then io.EOF, and the buffers the
// parser holds stay near maxFrame.
func TestParserBounded(t *testing.T) {
	const maxFrame = 64
	for _, tc := range []struct {
		name string
		r    io.Reader
		want []rec
	}{
		{"data lines", lines("data: 0123456789\n", 100_000), []rec{tooLarge, eof}},
		{"CR data lines", lines("data: 0123456789\r", 100_000), []rec{tooLarge, eof}},
		{"one endless line", lines("data: 0123456789", 100_000), []rec{tooLarge, eof}},
		{"endless comment lines", lines(": 0123456789\n", 100_000), []rec{eof}},
		{"endless id lines", lines("id: 0123456789\n", 100_000), []rec{eof}},
		{"endless NUL id lines", lines("id: 01234\x00\n", 100_000), []rec{eof}},
		{"endless event lines", lines("event: 0123456789\n", 100_000), []rec{eof}},
		{"endless id line", lines("id: 0123456789", 100_000), []rec{tooLarge, eof}},
		{"endless name", lines("0123456789", 100_000), []rec{tooLarge, eof}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewParser(tc.r, maxFrame)
			got := collect(p, 10)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if held := cap(p.data) + cap(p.event) + cap(p.id) + cap(p.idTmp); held > 4*maxFrame {
				t.Errorf("parser holds %d bytes of block buffers, maxFrame %d", held, maxFrame)
			}
			if len(p.buf) != readBufSize {
				t.Errorf("read buffer is %d bytes, want %d", len(p.buf), readBufSize)
			}
		})
	}
}

// TestParserLargeFrames checks frames far larger than the read buffer.
func TestParserLargeFrames(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 10_000) // 160 KB, several reads
	in := "id: " + big[:1000] + "\nevent: e\ndata: " + big + "\ndata: " + big + "\n\n"
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) {
			got := parseAll(rd.new(in), 0)
			want := []rec{d(big + "\n" + big).ev("e").id(big[:1000]), eof}
			if !slices.Equal(got, want) {
				t.Errorf("got %d results, want the big frame then EOF", len(got))
			}
		})
	}
}

func TestErrFrameTooLargeIs(t *testing.T) {
	_, err := NewParser(strings.NewReader("data: 0123456789\n\n"), 4).Next()
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v", err)
	}
}

// TestParserCRAtBufferEnd puts a CRLF across the parser's own read buffer
// boundary, which a reader returning as much as asked for reaches.
func TestParserCRAtBufferEnd(t *testing.T) {
	for _, shift := range []int{-2, -1, 0, 1} {
		value := strings.Repeat("v", readBufSize-len("data: ")-1+shift)
		in := "data: " + value + "\r\ndata: b\r\n\r\n"
		got := parseAll(strings.NewReader(in), 0)
		want := []rec{d(value + "\nb"), eof}
		if !slices.Equal(got, want) {
			t.Errorf("CR at %d: got %d results %.60v", len("data: ")+len(value), len(got), got)
		}
	}
}
