//go:build !race

package frame

import (
	"strings"
	"testing"
)

// Zero allocations per frame is part of the contract: the proxy parses
// every upstream frame and encodes it again for the log.

func TestParserAllocs(t *testing.T) {
	for _, tc := range []struct{ name, frame string }{
		{"small", smallFrame},
		{"CR", strings.ReplaceAll(smallFrame, "\n", "\r")},
		{"CRLF", strings.ReplaceAll(smallFrame, "\n", "\r\n")},
		{"BOM-like and comments", ": c\n\xEF\xBB\xBFx: y\nretry: 99\nid: a\x00\ndata\ndata: a\n\n"},
		{"64KiB lines", bigFrame(64)},
		{"oversized", "data: " + strings.Repeat("x", 2000) + "\n\ndata: ok\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewParser(&repeatReader{b: []byte(tc.frame), n: -1}, 1024)
			for range 10 { // warm: buffers grow to their size
				p.Next()
			}
			n := testing.AllocsPerRun(1000, func() {
				if _, err := p.Next(); err != nil && err != ErrFrameTooLarge {
					t.Fatal(err)
				}
			})
			if n != 0 {
				t.Errorf("%v allocations per frame on a warm parser, want 0", n)
			}
		})
	}
}

func TestParserResetAllocs(t *testing.T) {
	r := strings.NewReader(smallFrame)
	p := NewParser(r, 0)
	p.Next()
	n := testing.AllocsPerRun(100, func() {
		r.Reset(smallFrame)
		p.Reset(r)
		if _, err := p.Next(); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("%v allocations for Reset and a frame, want 0", n)
	}
}

func TestEncodeAllocs(t *testing.T) {
	f := &Frame{Event: []byte("update"), Data: []byte("line one\nline two\r\nline three"), Retry: 3000}
	id := []byte("01HF3Z6YQK7W8X9V0ABCDEFGHJ-0000000000042")
	buf := make([]byte, 0, 256)
	for name, fn := range map[string]func(){
		"AppendEvent":   func() { buf = AppendEvent(buf[:0], id, f) },
		"AppendComment": func() { buf = AppendComment(buf[:0], "heart\nbeat") },
		"AppendRetry":   func() { buf = AppendRetry(buf[:0], 1<<40) },
	} {
		if n := testing.AllocsPerRun(1000, fn); n != 0 {
			t.Errorf("%s: %v allocations into a buffer with room, want 0", name, n)
		}
	}
}
