package proxy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/replay"
)

// A degraded owner (its appends failed: it went on alone from pendingFrom
// under a label of its own) does not read the Redis log for a client older
// than its local log: once Redis answers again, that log may hold another
// replica's frames past pendingFrom (it took the stream over while this one
// was cut off, before the write-back finds it is fenced). The client got
// those, then this owner's own frames, with no sync event at the switch and
// ids going down; now its read is evicted (a slow-client sync) and a resume
// there gets sync-required. Found by review.
func TestDegradedOwnerReadsNoOtherWriter(t *testing.T) {
	ctx := context.Background()
	s, rc := redisOwner(t, 1000)
	st := s.rep.st()
	enc := func(id replay.ID, data string) []byte {
		return frame.AppendEvent(nil, []byte(id.String()), &frame.Frame{Data: []byte(data), Retry: -1})
	}
	for seq := uint64(1); seq <= 10; seq++ {
		f := enc(s.id(seq), "A")
		if err := st.AppendContext(ctx, seq, [][]byte{f}, ""); err != nil {
			t.Fatal(err)
		}
		s.deliver(seq, f)
	}
	// Cut from Redis at 11 (flushLocked's failed append): A goes on alone.
	s.rep.wmu.Lock()
	s.relabel(11)
	s.rep.setPending(11)
	s.rep.wmu.Unlock()
	for seq := uint64(11); seq <= 30; seq++ {
		s.deliver(seq, enc(s.id(seq), "A"))
	}
	// Meanwhile replica B took the log over and went on from 11.
	b := takeOver(t, s, rc)
	other := s.hub.gens.Next()
	for seq := uint64(11); seq <= 40; seq++ {
		if err := b.AppendContext(ctx, seq, [][]byte{enc(replay.ID{Gen: other, Seq: seq}, "B")}, ""); err != nil {
			t.Fatal(err)
		}
	}
	// A client of A at 5, older than A's local log (21..30).
	buf, last, err := s.readLog(5, nil, 1<<20)
	if strings.Contains(string(buf), "data: B") {
		t.Fatalf("a client of the degraded owner got another replica's frames from Redis: %q", buf)
	}
	if !errors.Is(err, replay.ErrEvicted) || last != 5 {
		t.Fatalf("readLog(5) = %d, %v; want evicted (a slow-client sync)", last, err)
	}
	// Its own frames are still served.
	if buf, last, err := s.readLog(25, nil, 1<<20); err != nil || last != 30 || strings.Contains(string(buf), "data: B") {
		t.Fatalf("readLog(25) = %q, %d, %v", buf, last, err)
	}
}
