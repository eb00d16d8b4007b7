//go:build !race

package replay

import (
	"bytes"
	"testing"
)

func TestAllocations(t *testing.T) {
	r := NewRing(64, NewBudget(1<<20))
	frame := bytes.Repeat([]byte{'x'}, 200)
	seq := uint64(0)
	for range 64 {
		seq++
		if err := r.Append(seq, frame); err != nil {
			t.Fatal(err)
		}
	}
	id := ID{Gen: NewGenerator().Next(), Seq: 987654321}
	text := []byte(id.String())
	dst := make([]byte, 0, 64*len(frame))
	long := bytes.Repeat([]byte{'0'}, 8<<10)

	for _, tc := range []struct {
		name string
		fn   func()
	}{
		{"Ring.Append warm", func() {
			seq++
			if err := r.Append(seq, frame[:150+seq%50]); err != nil {
				t.Fatal(err)
			}
		}},
		{"Ring.Read one frame", func() {
			if _, _, err := r.Read(seq-1, dst[:0], 1); err != nil {
				t.Fatal(err)
			}
		}},
		{"Ring.Read into a sized buffer", func() {
			if _, _, err := r.Read(seq-63, dst[:0], cap(dst)); err != nil {
				t.Fatal(err)
			}
		}},
		{"Ring.Read nothing new", func() { r.Read(seq, nil, 1<<20) }},
		{"Ring.Read evicted", func() { r.Read(0, nil, 1<<20) }},
		{"Ring.Bounds and Stats", func() { r.Bounds(); r.Stats() }},
		{"ParseID", func() {
			if _, err := ParseID(text); err != nil {
				t.Fatal(err)
			}
		}},
		{"ParseID reject 8 KiB", func() { ParseID(long) }},
		{"ID.AppendText", func() { dst = id.AppendText(dst[:0]) }},
	} {
		if n := testing.AllocsPerRun(1000, tc.fn); n != 0 {
			t.Errorf("%s: %v allocs, want 0", tc.name, n)
		}
	}
}
