package frame

import (
	"runtime"
	"strings"
	"testing"
)

// TestParserGiantFrameBuffersReleased: a stream's parser lives as long
// as the stream (session mode: one per client). After one frame near
// maxFrame it must not keep that frame's buffers for good: the proxy drops
// its own encode buffer after a giant frame for this reason ("do not keep a
// giant frame's buffer", proxy/stream.go), and this memory is not counted by
// LASTEVENT_MAX_MEMORY. 64 parsers, each of which parsed one 900 KiB frame
// (data, event and id) and then small ones, should hold about their 8 KiB
// read buffers, not 64 x 2.7 MiB.
func TestParserGiantFrameBuffersReleased(t *testing.T) {
	const n = 64
	const maxFrame = 3 << 20
	big := strings.Repeat("x", 900<<10)
	input := "id: " + big + "\nevent: " + big + "\ndata: " + big + "\n\n" + strings.Repeat("id: 1\nevent: e\ndata: small\n\n", 10)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	ps := make([]*Parser, n)
	for i := range ps {
		p := NewParser(strings.NewReader(input), maxFrame)
		for k := 0; k < 11; k++ {
			f, err := p.Next()
			if err != nil {
				t.Fatalf("frame %d: %v", k, err)
			}
			if k > 0 && string(f.Data) != "small" {
				t.Fatalf("frame %d: %q", k, f.Data)
			}
		}
		ps[i] = p
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	runtime.KeepAlive(ps)
	per := held / n
	t.Logf("%d parsers hold %d KiB after their giant frame (%d KiB each)", n, held>>10, per>>10)
	if per > 64<<10 {
		t.Fatalf("each parser still holds %d KiB after one giant frame and 10 small ones: its buffers grow with the largest frame ever seen and are never let go", per>>10)
	}
}
