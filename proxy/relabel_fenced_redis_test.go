package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/replay"
)

// An owner that another replica has taken over without its knowing yet (it
// stalled past its lease: a long pause of the process, renewals that timed
// out) gets a client whose id comes from the new owner's label, and relabels
// above it for the client's sync event: SetAlias is not fenced, so the alias
// is written and the stream's head takes a label newer than the new owner's.
// At its next append the old owner finds it is fenced and follows the new
// owner's log: the client, whose sync event carried the new label, then gets
// the new owner's frames, whose ids sort below it.
func TestRelabelAboveByFencedOwner(t *testing.T) {
	ctx := context.Background()
	s, rc := redisOwner(t, 1000)
	pub := func(data string) {
		ownerPublish(s, "", data)
		s.flushStage()
	}
	for range 3 {
		pub("A")
	}
	// Replica B takes the stream over (A's lease ran out while it stalled)
	// and appends frames 4 and 5 under its own, newer label.
	b := takeOver(t, s, rc)
	time.Sleep(2 * time.Millisecond)
	bLabel := replay.NewGenerator().Next()
	for seq := uint64(4); seq <= 5; seq++ {
		f := frame.AppendEvent(nil, []byte(replay.ID{Gen: bLabel, Seq: seq}.String()), &frame.Frame{Data: []byte("B"), Retry: -1})
		if err := b.AppendContext(ctx, seq, [][]byte{f}, ""); err != nil {
			t.Fatal(err)
		}
	}
	// A client of B reconnects to A with B's id: A answers with a sync
	// event at its head (attach: relabelAbove, then head).
	s.relabelAbove(replay.ID{Gen: bLabel, Seq: 5})
	syncID := s.head()
	// A's next frame is fenced; A follows B's log from its head.
	pub("A")
	if !s.demoted() {
		t.Fatal("A's append after the takeover was not fenced")
	}
	s.rep.role.Store(roleFollower)
	if _, err := s.rep.st().Tail(ctx, s.seq.Load(), s.appendFollowed); err != nil {
		t.Fatal(err)
	}
	buf, last, err := s.log.Read(syncID.Seq, nil, 1)
	if err != nil || last != syncID.Seq+1 {
		t.Fatalf("read after %d: %d, %v", syncID.Seq, last, err)
	}
	next, err := replay.ParseID(buf[4 : 4+replay.TextLen])
	if err != nil {
		t.Fatal(err)
	}
	if next.String() <= syncID.String() {
		t.Fatalf("the client's sync event carried %s, the next frame it gets %s: ids went down", syncID, next)
	}
}
