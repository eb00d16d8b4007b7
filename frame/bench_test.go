package frame

import (
	"strings"
	"testing"
)

// smallFrame is a typical upstream event: id, type and ~100 B of JSON.
const smallFrame = "id: 1234567\nevent: update\ndata: {\"id\":1234567,\"type\":\"price\",\"symbol\":\"YHOO\",\"bid\":101.25,\"ask\":101.50,\"ts\":1700000000}\n\n"

func bigFrame(lines int) string {
	const size = 64 << 10
	line := strings.Repeat("x", size/lines-len("data: \n"))
	return "id: 1\n" + strings.Repeat("data: "+line+"\n", lines) + "\n"
}

// benchParse reports ns/op per frame and MB/s of input: every op is one
// Next over an endless repetition of frame.
func benchParse(b *testing.B, frame string) {
	p := NewParser(&repeatReader{b: []byte(frame), n: -1}, 0)
	if _, err := p.Next(); err != nil { // warm the buffers
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if f, err := p.Next(); err != nil || !f.Dispatch {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseSmall(b *testing.B) { benchParse(b, smallFrame) }
func BenchmarkParseSmallCRLF(b *testing.B) {
	benchParse(b, strings.ReplaceAll(smallFrame, "\n", "\r\n"))
}
func BenchmarkParse64KiB(b *testing.B)      { benchParse(b, bigFrame(1)) }
func BenchmarkParse64KiBLines(b *testing.B) { benchParse(b, bigFrame(64)) }
func BenchmarkParse64KiBCRLines(b *testing.B) {
	benchParse(b, strings.ReplaceAll(bigFrame(64), "\n", "\r"))
}

func benchAppendEvent(b *testing.B, f *Frame, id []byte) {
	buf := AppendEvent(nil, id, f)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		buf = AppendEvent(buf[:0], id, f)
	}
}

func parsedFrame(b *testing.B, s string) *Frame {
	f, err := NewParser(strings.NewReader(s), 0).Next()
	if err != nil {
		b.Fatal(err)
	}
	return f
}

func BenchmarkAppendEventSmall(b *testing.B) {
	benchAppendEvent(b, parsedFrame(b, smallFrame), []byte("01HF3Z6YQK7W8X9V0ABCDEFGHJ-0000000000042"))
}

func BenchmarkAppendEvent64KiBLines(b *testing.B) {
	benchAppendEvent(b, parsedFrame(b, bigFrame(64)), []byte("01HF3Z6YQK7W8X9V0ABCDEFGHJ-0000000000042"))
}

func BenchmarkAppendComment(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for range b.N {
		buf = AppendComment(buf[:0], "heartbeat")
	}
}
