package proxy

import (
	"testing"

	"github.com/lastevent/lastevent/replay"
)

// An owner whose Redis appends fail now and then relabels at each failure.
// Past maxLabels the oldest labels whose frames have all left the log go
// (from the list and the hub's index); the stream's own generation and every
// label a buffered frame carries stay.
func TestPruneLabels(t *testing.T) {
	h := &Hub{gens: replay.NewGenerator(), byLabel: make(map[replay.Gen]*stream), byGen: make(map[replay.Gen]*stream)}
	s := &stream{hub: h, gen: h.gens.Next(), rep: &repState{}, log: replay.NewRing(10, nil)}
	s.labels.Store(&[]label{{gen: s.gen}})
	frameOf := func(seq uint64) []byte { return []byte("data: x\n\n") }
	for seq := uint64(1); seq <= 300; seq++ {
		s.relabel(seq) // a failed append before each frame
		if err := s.log.Append(seq, frameOf(seq)); err != nil {
			t.Fatal(err)
		}
		ls := s.labelList()
		if len(ls) > maxLabels+1 {
			t.Fatalf("after frame %d: %d labels, want at most %d", seq, len(ls), maxLabels+1)
		}
		if ls[0].gen != s.gen {
			t.Fatalf("after frame %d: the stream's own generation was dropped", seq)
		}
		oldest, newest := s.log.Bounds()
		for q := oldest; q <= newest; q++ {
			// The label frame q was issued under is still known.
			var want replay.Gen
			for _, l := range ls {
				if l.from <= q {
					want = l.gen
				}
			}
			if lo, hi, ok := s.labelRange(want); !ok || q-1 < lo || q > hi {
				t.Fatalf("after frame %d: frame %d's label %v not resolvable (%d..%d, %v)", seq, q, want, lo, hi, ok)
			}
		}
	}
	ls := s.labelList()
	if len(ls) != maxLabels {
		t.Errorf("%d labels after 300 relabels, want %d", len(ls), maxLabels)
	}
	if len(h.byLabel) != len(ls)-1 {
		t.Errorf("the hub indexes %d labels, the stream has %d besides its own", len(h.byLabel), len(ls)-1)
	}
	for _, l := range ls[1:] {
		if h.byLabel[l.gen] != s {
			t.Errorf("label %v kept but not indexed", l.gen)
		}
	}
}
