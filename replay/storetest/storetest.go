// Package storetest is the conformance suite for replay.Store. Every
// implementation (the in-memory Ring, a future shared store) runs the same
// suite from its own test:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, capacity int, budget *replay.Budget) replay.Store {
//			return replay.NewRing(capacity, budget)
//		})
//	}
//
// The suite only uses the Store interface. It assumes an implementation keeps
// at most capacity frames and honours the budget at least to the point of
// returning its bytes on Close; it never asserts how many frames a budget
// leaves, only that the newest frame is always kept.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lastevent/lastevent/replay"
)

// NewStore makes an empty store keeping at most capacity frames, charging
// budget (nil: unlimited). It may register cleanups on t.
type NewStore func(t *testing.T, capacity int, budget *replay.Budget) replay.Store

// Options adapts the suite to an implementation; the zero value is what Run
// uses.
type Options struct {
	// ConcurrentFrames is how many frames the ConcurrentReaders test writes
	// while its readers follow (0: 20000). A store that costs a network
	// round trip per call (the Redis store) writes fewer, so the test ends in
	// its 30 s under -race on a loaded machine; a few thousand still wrap a
	// 64-frame log many times over.
	ConcurrentFrames int
}

// Run runs the whole suite against the stores newStore makes.
func Run(t *testing.T, newStore func(t *testing.T, capacity int, budget *replay.Budget) replay.Store) {
	RunOptions(t, newStore, Options{})
}

// RunOptions is Run with options.
func RunOptions(t *testing.T, newStore func(t *testing.T, capacity int, budget *replay.Budget) replay.Store, opts Options) {
	concurrentFrames := uint64(20000)
	if opts.ConcurrentFrames > 0 {
		concurrentFrames = uint64(opts.ConcurrentFrames)
	}
	testConcurrentReaders := func(t *testing.T, newStore NewStore) {
		testConcurrentReaders(t, newStore, concurrentFrames)
	}
	tests := []struct {
		name string
		fn   func(*testing.T, NewStore)
	}{
		{"AppendReadOrder", testAppendReadOrder},
		{"ReadAtNewestIsEmpty", testReadAtNewest},
		{"EmptyLog", testEmptyLog},
		{"Ahead", testAhead},
		{"EvictedAfterCountEviction", testEvictedByCount},
		{"Bounds", testBounds},
		{"FirstAppendAnySeq", testFirstAppendAnySeq},
		{"MaxBytesBatching", testMaxBytes},
		{"OutOfOrder", testOutOfOrder},
		{"ReadCopies", testReadCopies},
		{"ReadAppendsToDst", testReadAppendsToDst},
		{"Stats", testStats},
		{"BudgetKeepsNewest", testBudgetKeepsNewest},
		{"ConcurrentReaders", testConcurrentReaders},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore) })
	}
}

// frameFor is the frame the suite stores under seq: self-delimiting (one
// line), naming its sequence, and of varying length.
func frameFor(seq uint64) []byte {
	b := strconv.AppendUint(nil, seq, 10)
	b = append(b, ':')
	b = append(b, bytes.Repeat([]byte{'x'}, int(seq%13))...)
	return append(b, '\n')
}

func appendRange(t *testing.T, s replay.Store, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		if err := s.Append(seq, frameFor(seq)); err != nil {
			t.Fatalf("Append(%d): %v", seq, err)
		}
	}
}

func want(from, to uint64) []byte {
	var b []byte
	for seq := from; seq <= to; seq++ {
		b = append(b, frameFor(seq)...)
	}
	return b
}

// readAll reads everything after `after` in one call.
func readAll(t *testing.T, s replay.Store, after uint64) ([]byte, uint64) {
	t.Helper()
	got, last, err := s.Read(after, nil, 1<<30)
	if err != nil {
		t.Fatalf("Read(%d): %v", after, err)
	}
	return got, last
}

func testAppendReadOrder(t *testing.T, newStore NewStore) {
	s := newStore(t, 100, nil)
	appendRange(t, s, 1, 50)
	for _, after := range []uint64{0, 1, 17, 48, 49} {
		got, last := readAll(t, s, after)
		if w := want(after+1, 50); !bytes.Equal(got, w) {
			t.Errorf("Read(%d) = %q, want %q", after, got, w)
		}
		if last != 50 {
			t.Errorf("Read(%d) last = %d, want 50", after, last)
		}
	}
}

func testReadAtNewest(t *testing.T, newStore NewStore) {
	s := newStore(t, 10, nil)
	appendRange(t, s, 1, 5)
	dst := []byte("keep")
	got, last, err := s.Read(5, dst, 1<<20)
	if err != nil || last != 5 || string(got) != "keep" {
		t.Fatalf("Read(newest) = %q, %d, %v; want %q, 5, nil", got, last, err, "keep")
	}
}

func testEmptyLog(t *testing.T, newStore NewStore) {
	s := newStore(t, 10, nil)
	oldest, newest := s.Bounds()
	if oldest != newest+1 {
		t.Fatalf("empty Bounds() = %d, %d; want oldest == newest+1", oldest, newest)
	}
	if frames, _ := s.Stats(); frames != 0 {
		t.Fatalf("empty Stats frames = %d", frames)
	}
	got, last, err := s.Read(newest, nil, 1<<20)
	if err != nil || last != newest || len(got) != 0 {
		t.Fatalf("empty Read(%d) = %q, %d, %v; want nothing", newest, got, last, err)
	}
	if _, _, err := s.Read(newest+1, nil, 1<<20); !errors.Is(err, replay.ErrAhead) {
		t.Fatalf("empty Read(%d) err = %v, want ErrAhead", newest+1, err)
	}
}

func testAhead(t *testing.T, newStore NewStore) {
	s := newStore(t, 10, nil)
	appendRange(t, s, 1, 5)
	for _, after := range []uint64{6, 7, 1 << 40, ^uint64(0)} {
		dst := []byte("d")
		got, _, err := s.Read(after, dst, 1<<20)
		if !errors.Is(err, replay.ErrAhead) {
			t.Errorf("Read(%d) err = %v, want ErrAhead", after, err)
		}
		if string(got) != "d" {
			t.Errorf("Read(%d) changed dst to %q", after, got)
		}
	}
}

func testEvictedByCount(t *testing.T, newStore NewStore) {
	const capacity = 8
	s := newStore(t, capacity, nil)
	appendRange(t, s, 1, 20) // keeps 13..20
	oldest, newest := s.Bounds()
	if newest != 20 {
		t.Fatalf("newest = %d, want 20", newest)
	}
	if n := newest - oldest + 1; n > capacity {
		t.Fatalf("keeps %d frames (Bounds %d..%d), capacity %d", n, oldest, newest, capacity)
	}
	if frames, _ := s.Stats(); frames > capacity {
		t.Fatalf("Stats frames = %d, capacity %d", frames, capacity)
	}
	for after := uint64(0); after+1 < oldest; after++ {
		if _, _, err := s.Read(after, nil, 1<<20); !errors.Is(err, replay.ErrEvicted) {
			t.Errorf("Read(%d) err = %v, want ErrEvicted (oldest %d)", after, err, oldest)
		}
	}
	// The boundary: oldest-1 still reads from oldest.
	got, last := readAll(t, s, oldest-1)
	if w := want(oldest, 20); !bytes.Equal(got, w) || last != 20 {
		t.Fatalf("Read(%d) = %q, %d; want %q, 20", oldest-1, got, last, w)
	}
}

func testBounds(t *testing.T, newStore NewStore) {
	s := newStore(t, 4, nil)
	for seq := uint64(1); seq <= 10; seq++ {
		appendRange(t, s, seq, seq)
		oldest, newest := s.Bounds()
		if newest != seq {
			t.Fatalf("after Append(%d): newest = %d", seq, newest)
		}
		if oldest < 1 || oldest > newest || newest-oldest+1 > 4 {
			t.Fatalf("after Append(%d): Bounds = %d, %d", seq, oldest, newest)
		}
		if want := max(1, int64(seq)-3); int64(oldest) != want {
			t.Fatalf("after Append(%d): oldest = %d, want %d (capacity 4, no budget)", seq, oldest, want)
		}
	}
}

func testFirstAppendAnySeq(t *testing.T, newStore NewStore) {
	s := newStore(t, 10, nil)
	appendRange(t, s, 100, 103)
	if oldest, newest := s.Bounds(); oldest != 100 || newest != 103 {
		t.Fatalf("Bounds = %d, %d; want 100, 103", oldest, newest)
	}
	got, last := readAll(t, s, 99)
	if w := want(100, 103); !bytes.Equal(got, w) || last != 103 {
		t.Fatalf("Read(99) = %q, %d; want %q, 103", got, last, w)
	}
	for _, after := range []uint64{0, 50, 98} {
		if _, _, err := s.Read(after, nil, 1<<20); !errors.Is(err, replay.ErrEvicted) {
			t.Errorf("Read(%d) err = %v, want ErrEvicted", after, err)
		}
	}
}

func testMaxBytes(t *testing.T, newStore NewStore) {
	s := newStore(t, 100, nil)
	appendRange(t, s, 1, 30)
	full := want(1, 30)
	for _, maxBytes := range []int{-1, 0, 1, 3, 10, 25, 26, 60, 200, len(full) - 1, len(full), 1 << 20} {
		var got []byte
		after := uint64(0)
		for calls := 0; after < 30; calls++ {
			if calls > 30 {
				t.Fatalf("maxBytes %d: no progress", maxBytes)
			}
			b, last, err := s.Read(after, nil, maxBytes)
			if err != nil {
				t.Fatalf("maxBytes %d: Read(%d): %v", maxBytes, after, err)
			}
			if last <= after {
				t.Fatalf("maxBytes %d: Read(%d) returned last %d: at least one frame expected", maxBytes, after, last)
			}
			w := want(after+1, last)
			if !bytes.Equal(b, w) {
				t.Fatalf("maxBytes %d: Read(%d) = %q, want %q", maxBytes, after, b, w)
			}
			if last > after+1 && len(b) > maxBytes {
				t.Fatalf("maxBytes %d: Read(%d) returned %d bytes in %d frames", maxBytes, after, len(b), last-after)
			}
			// It stops only when the next frame would not fit.
			if last < 30 && len(b)+len(frameFor(last+1)) <= maxBytes {
				t.Fatalf("maxBytes %d: Read(%d) stopped at %d with room for %d", maxBytes, after, last, last+1)
			}
			got = append(got, b...)
			after = last
		}
		if !bytes.Equal(got, full) {
			t.Fatalf("maxBytes %d: batches joined = %q, want %q", maxBytes, got, full)
		}
	}
}

func testOutOfOrder(t *testing.T, newStore NewStore) {
	s := newStore(t, 10, nil)
	if err := s.Append(0, []byte("zero\n")); !errors.Is(err, replay.ErrOutOfOrder) {
		t.Errorf("Append(0) on empty log err = %v, want ErrOutOfOrder", err)
	}
	appendRange(t, s, 5, 7)
	for _, seq := range []uint64{0, 1, 5, 6, 7, 9, 100} {
		if err := s.Append(seq, []byte("bad\n")); !errors.Is(err, replay.ErrOutOfOrder) {
			t.Errorf("Append(%d) after 7 err = %v, want ErrOutOfOrder", seq, err)
		}
	}
	// Rejected appends change nothing.
	if oldest, newest := s.Bounds(); oldest != 5 || newest != 7 {
		t.Fatalf("Bounds = %d, %d; want 5, 7", oldest, newest)
	}
	got, _ := readAll(t, s, 4)
	if w := want(5, 7); !bytes.Equal(got, w) {
		t.Fatalf("Read(4) = %q, want %q", got, w)
	}
	appendRange(t, s, 8, 8)
}

func testReadCopies(t *testing.T, newStore NewStore) {
	const capacity = 4
	s := newStore(t, capacity, nil)

	frame := []byte("1:original\n")
	if err := s.Append(1, frame); err != nil {
		t.Fatal(err)
	}
	copy(frame, "1:CHANGED!")
	got, _ := readAll(t, s, 0)
	if string(got) != "1:original\n" {
		t.Fatalf("Append kept the caller's slice: read %q", got)
	}

	// Bytes already read stay put while later appends reuse the store's
	// memory (several times around a ring of this capacity).
	before := bytes.Clone(got)
	reused := frame[:0]
	for seq := uint64(2); seq <= 5*capacity; seq++ {
		reused = append(reused[:0], frameFor(seq)...)
		for i := range reused[:len(reused)-1] {
			if reused[i] == 'x' {
				reused[i] = 'y' // same length as frameFor(seq)
			}
		}
		if err := s.Append(seq, reused); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, before) {
			t.Fatalf("after Append(%d) the bytes read earlier changed to %q", seq, got)
		}
	}
	// Read into a buffer with spare capacity, then append more: still stable.
	buf := make([]byte, 0, 4096)
	oldest, newest := s.Bounds()
	got2, _, err := s.Read(oldest-1, buf, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	snap := bytes.Clone(got2)
	appendRange(t, s, newest+1, newest+3*capacity)
	if !bytes.Equal(got2, snap) {
		t.Fatalf("bytes read into dst changed after more appends: %q, was %q", got2, snap)
	}
}

func testReadAppendsToDst(t *testing.T, newStore NewStore) {
	s := newStore(t, 10, nil)
	appendRange(t, s, 1, 3)
	dst := append(make([]byte, 0, 64), "prefix|"...)
	got, last, err := s.Read(0, dst, 1<<20)
	if err != nil || last != 3 {
		t.Fatalf("Read = %d, %v", last, err)
	}
	if w := "prefix|" + string(want(1, 3)); string(got) != w {
		t.Fatalf("Read = %q, want %q", got, w)
	}
	if &got[0] != &dst[:1][0] {
		t.Errorf("Read reallocated a dst that had room")
	}
}

func testStats(t *testing.T, newStore NewStore) {
	s := newStore(t, 5, nil)
	if frames, bytes := s.Stats(); frames != 0 || bytes < 0 {
		t.Fatalf("empty Stats = %d, %d", frames, bytes)
	}
	for seq := uint64(1); seq <= 12; seq++ {
		appendRange(t, s, seq, seq)
		frames, b := s.Stats()
		oldest, newest := s.Bounds()
		if want := int(newest - oldest + 1); frames != want {
			t.Fatalf("after %d: Stats frames = %d, Bounds say %d", seq, frames, want)
		}
		var total int64
		for q := oldest; q <= newest; q++ {
			total += int64(len(frameFor(q)))
		}
		if b < total {
			t.Fatalf("after %d: Stats bytes = %d, less than the %d bytes of frames held", seq, b, total)
		}
	}
}

func testBudgetKeepsNewest(t *testing.T, newStore NewStore) {
	budget := replay.NewBudget(1) // smaller than any frame
	s := newStore(t, 100, budget)
	for seq := uint64(1); seq <= 20; seq++ {
		appendRange(t, s, seq, seq)
		got, last, err := s.Read(seq-1, nil, 1<<20)
		if err != nil || last != seq || !bytes.Equal(got, frameFor(seq)) {
			t.Fatalf("after Append(%d) under a full budget: Read(%d) = %q, %d, %v; want the newest frame",
				seq, seq-1, got, last, err)
		}
		if _, newest := s.Bounds(); newest != seq {
			t.Fatalf("newest = %d, want %d", newest, seq)
		}
	}
}

// testConcurrentReaders runs one writer and many readers. Each reader follows
// the log from 0 and must see every sequence exactly once, in order, until an
// ErrEvicted that is true (the frame after its cursor really is gone), after
// which it restarts from the oldest frame. Run it with -race.
func testConcurrentReaders(t *testing.T, newStore NewStore, total uint64) {
	const (
		capacity = 64
		readers  = 8
	)
	s := newStore(t, capacity, nil)
	deadline := time.Now().Add(30 * time.Second)

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		resyncs int
	)
	errs := make(chan error, readers+1)
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		for seq := uint64(1); seq <= total; seq++ {
			if err := s.Append(seq, frameFor(seq)); err != nil {
				errs <- fmt.Errorf("writer: Append(%d): %v", seq, err)
				return
			}
			if seq%128 == 0 {
				runtime.Gosched() // let readers keep up some of the time
			}
		}
	})
	for r := range readers {
		maxBytes := []int{0, 40, 200, 1 << 20}[r%4]
		wg.Go(func() {
			n, err := follow(s, total, maxBytes, done, deadline)
			if err != nil {
				errs <- fmt.Errorf("reader %d (maxBytes %d): %v", r, maxBytes, err)
			}
			mu.Lock()
			resyncs += n
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d readers, %d frames, %d resyncs after ErrEvicted", readers, total, resyncs)
}

// follow reads the log to total and returns how often it fell off the tail.
func follow(s replay.Store, total uint64, maxBytes int, done <-chan struct{}, deadline time.Time) (resyncs int, err error) {
	var cursor uint64
	buf := make([]byte, 0, 1024)
	for cursor < total {
		if time.Now().After(deadline) {
			return resyncs, fmt.Errorf("timed out at cursor %d", cursor)
		}
		var (
			got  []byte
			last uint64
		)
		got, last, err = s.Read(cursor, buf[:0], maxBytes)
		b := got
		switch {
		case errors.Is(err, replay.ErrEvicted):
			oldest, _ := s.Bounds()
			if oldest <= cursor+1 {
				return resyncs, fmt.Errorf("ErrEvicted for %d but oldest is %d", cursor, oldest)
			}
			resyncs++
			cursor = oldest - 1
			continue
		case err != nil:
			return resyncs, fmt.Errorf("Read(%d): %v", cursor, err)
		}
		if last == cursor {
			if len(b) != 0 {
				return resyncs, fmt.Errorf("Read(%d) returned %q but no progress", cursor, b)
			}
			select {
			case <-done:
				_, newest := s.Bounds()
				if newest == cursor {
					return resyncs, fmt.Errorf("writer done at %d, reader stuck at %d", newest, cursor)
				}
			default:
			}
			runtime.Gosched()
			continue
		}
		// Every frame in the batch must be the next sequence, whole.
		for seq := cursor + 1; seq <= last; seq++ {
			f := frameFor(seq)
			if !bytes.HasPrefix(b, f) {
				n := min(len(b), len(f)+8)
				return resyncs, fmt.Errorf("Read(%d): at seq %d got %q, want %q", cursor, seq, b[:n], f)
			}
			b = b[len(f):]
		}
		if len(b) != 0 {
			return resyncs, fmt.Errorf("Read(%d) returned %d bytes beyond last %d", cursor, len(b), last)
		}
		cursor = last
		buf = got[:0] // reuse whatever Read grew
	}
	return resyncs, nil
}

func testClose(t *testing.T, newStore NewStore) {
	budget := replay.NewBudget(1 << 30)
	base := budget.Used()
	s := newStore(t, 16, budget)
	appendRange(t, s, 1, 40)
	s.Close()
	if used := budget.Used(); used != base {
		t.Errorf("budget Used after Close = %d, want %d", used, base)
	}
	if frames, b := s.Stats(); frames != 0 || b != 0 {
		t.Errorf("Stats after Close = %d, %d; want 0, 0", frames, b)
	}
	// Later calls fail or return nothing; they never hand out frames.
	for _, after := range []uint64{0, 30, 39, 40} {
		got, _, err := s.Read(after, nil, 1<<20)
		if err == nil && len(got) != 0 {
			t.Errorf("Read(%d) after Close returned %q", after, got)
		}
	}
	if oldest, newest := s.Bounds(); oldest != newest+1 {
		t.Errorf("Bounds after Close = %d, %d; want an empty log", oldest, newest)
	}
	_ = s.Append(41, frameFor(41))
	if got, _, err := s.Read(40, nil, 1<<20); err == nil && len(got) != 0 {
		t.Errorf("Read after Append after Close returned %q", got)
	}
	s.Close() // idempotent
	if used := budget.Used(); used != base {
		t.Errorf("budget Used after second Close = %d, want %d", used, base)
	}
}
