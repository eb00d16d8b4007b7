package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/redisstore"
)

// startWriteBack starts the loop that writes a degraded owner's frames back
// once Redis answers, on its own goroutine, so that neither a quiet upstream
// delays it nor a Redis still down stalls delivery. The caller holds wmu.
func (s *stream) startWriteBack() {
	r := s.rep
	if r.retrying || r.closed {
		return
	}
	r.retrying = true
	go func() {
		t := time.NewTicker(s.retryEvery())
		defer t.Stop()
		quit := func() {
			r.wmu.Lock()
			r.retrying = false
			r.wmu.Unlock()
		}
		for {
			select {
			case <-s.stop:
				quit()
				return
			case <-s.done:
				quit()
				return
			case <-t.C:
			}
			// Only once Redis answers does the loop take the write lock:
			// while it is down the owner's delivery must not wait on the
			// loop's timeouts.
			if s.hub.reps.ping() != nil {
				continue
			}
			r.wmu.Lock()
			stop := r.pendingFrom == 0 || r.demote.Load() || r.closed
			if !stop {
				stop = s.writeBack()
			}
			if stop {
				r.retrying = false // under wmu: a new outage starts a new loop
			}
			r.wmu.Unlock()
			if stop {
				return
			}
		}
	}()
}

// reencodeBuf rewrites frame for the id of seq after a relabel: a marker is
// encoded again; an event's id is the first line and has a fixed width, so
// it is overwritten in place.
func (s *stream) reencodeBuf(frame []byte, seq uint64, marker string) []byte {
	if marker != "" {
		return appendSyncRequired(frame[:0], s.id(seq), marker, false)
	}
	if len(frame) >= 4+replay.TextLen && string(frame[:4]) == "id: " {
		s.id(seq).AppendText(frame[4:4])
	}
	return frame
}

// Bounds of a staged burst: one Redis call carries at most this many frames
// or bytes (a bigger frame goes alone).
const (
	stageFrames = 64
	stageBytes  = 256 << 10
)

// stageFrame holds the frame in s.scratch back for one Redis append with
// the rest of its burst (flushLocked appends, then delivers), when this
// replica owns the stream and Redis answers; it reports whether it did. A
// frame it does not take is delivered at once: the stream runs alone (it
// opened, or went on, while Redis did not answer) and the write-back loop
// puts it in Redis later. The caller holds lockWrite.
func (s *stream) stageFrame(seq uint64, marker string) bool {
	r := s.rep
	if r.pendingFrom != 0 || r.st() == nil || r.role.Load() != roleOwner {
		return false
	}
	i := len(r.stage)
	if i == 0 {
		r.stageFirst, r.stageSize = seq, 0
	}
	if i < cap(r.stage) {
		r.stage = r.stage[:i+1]
		r.stage[i] = append(r.stage[i][:0], s.scratch...)
	} else {
		r.stage = append(r.stage, append([]byte(nil), s.scratch...))
	}
	r.stageMark = append(r.stageMark[:i], marker)
	r.stageUpID = append(r.stageUpID[:0], s.upLastID...) // the reader's goroutine: its own field
	r.stageSize += len(s.scratch)
	if len(r.stage) >= stageFrames || r.stageSize >= stageBytes {
		s.flushLocked()
	}
	return true
}

// flushStage sends on what the reader gathered since the upstream's last
// read; the parser calls it before it reads again, which may wait. In Redis
// mode it appends the staged frames to Redis in one call, then delivers
// them; in memory mode the frames are in the log already and it wakes the
// clients (or writes to them, see offer).
func (s *stream) flushStage() {
	if s.rep == nil {
		if s.wakeDue {
			s.wakeDue = false
			s.wakeAll()
		}
		return
	}
	s.lockWrite()
	s.flushLocked()
	s.unlockWrite()
}

// flushLocked is flushStage under lockWrite. On a refusal by another owner
// the frames are dropped (that owner reads the upstream itself); when Redis
// does not answer they are relabelled and delivered, and the owner goes on
// degraded.
func (s *stream) flushLocked() {
	r, h := s.rep, s.hub
	if len(r.stage) == 0 {
		return
	}
	first := r.stageFirst
	defer func() {
		for i := range r.stage {
			if cap(r.stage[i]) > 64<<10 {
				r.stage[i] = nil // do not keep a giant frame's buffer
			}
		}
		r.stage, r.stageMark = r.stage[:0], r.stageMark[:0]
	}()
	r.upID = append(r.upID[:0], r.stageUpID...)
	h.metrics.redisAppends.Inc()
	err := r.st().AppendContext(context.Background(), first, r.stage, string(r.upID))
	h.reps.report(err)
	switch {
	case err == nil:
	case errors.Is(err, redisstore.ErrFenced):
		r.demote.Store(true)
		s.closeBody()
		return
	default:
		h.log.Warn().Err(err).Str("stream", genText(s.gen)).Uint64("seq", first).Msg("Redis append failed; serving this replica's clients alone until it answers")
		s.relabel(first)
		for i := range r.stage {
			r.stage[i] = s.reencodeBuf(r.stage[i], first+uint64(i), r.stageMark[i])
		}
		r.setPending(first)
		s.startWriteBack()
	}
	for i, f := range r.stage {
		if !s.deliver(first+uint64(i), f) {
			return
		}
	}
	s.wakeAll()
}

// writeBack puts the frames this owner delivered while Redis did not answer
// into Redis, so they resume on any replica. It reports whether the stream
// is back to normal; on false it retries later (or the stream ends, when
// another replica took it over). The caller holds wmu.
func (s *stream) writeBack() bool {
	h, r := s.hub, s.rep
	ctx := context.Background()
	cur := s.labelList()[len(s.labelList())-1]
	if r.st() != nil {
		_, err := r.st().Renew(ctx)
		h.reps.report(err)
		switch {
		case err == nil:
		case errors.Is(err, redisstore.ErrFenced):
			r.demote.Store(true) // runReplicated ends the stream: pendingFrom is set
			s.closeBody()
			return false
		case errors.Is(err, redisstore.ErrUnknownGeneration):
			s.stopRenewLoop()
			r.st().Close()
			r.storeP.Store(nil)
		default:
			return false
		}
	}
	if r.st() == nil {
		// No log (Redis was down when the stream opened, or lost it): the
		// current label becomes a log of its own.
		st, err := h.storeOf(ctx, cur.gen)
		if err != nil && !errors.Is(err, redisstore.ErrUnknownGeneration) {
			return false
		}
		if _, err := st.Create(ctx, h.cfg.Redis.Lease); err != nil {
			h.reps.report(err)
			st.Close()
			if errors.Is(err, redisstore.ErrGenerationExists) {
				// A half-done earlier attempt left this label in Redis:
				// frames from here on get a fresh one (no id was issued
				// under it yet past this point's clients).
				s.relabel(s.seq.Load() + 1)
			}
			return false
		}
		if err := st.SetAttrs(ctx, map[string]string{"khash": r.khash}); err != nil {
			h.reps.report(err)
			st.Close()
			return false
		}
		if r.keyHash != "" {
			old, _, err := redisstore.Index(ctx, h.reps.rdb, r.keyHash, h.cfg.Redis.Timeout)
			h.reps.report(err)
			if err != nil {
				st.Close()
				return false
			}
			if !old.IsZero() {
				alive, err := h.leased(ctx, old)
				if err != nil {
					st.Close()
					return false
				}
				if alive && genAfter(old, cur.gen) {
					// Another replica runs this key's stream now, under a
					// newer generation: two writers must not share the
					// key. End this one.
					st.Close()
					r.demote.Store(true)
					s.closeBody()
					return false
				}
				// A live but older one (opened elsewhere while this owner
				// could not reach Redis) gives way: the index names the
				// newest generation, so every client's ids keep rising;
				// its owner sees that at its next renewal and ends it.
			}
			won, err := st.ClaimIndex(ctx, r.keyHash, old, h.cfg.Redis.Lease+h.cfg.Redis.Retention)
			h.reps.report(err)
			if err != nil {
				st.Close()
				return false
			}
			if !won {
				st.Close()
				r.demote.Store(true) // another replica opened the key meanwhile
				s.closeBody()
				return false
			}
		}
		s.becomeOwner(st)
		s.startRenew()
	} else {
		// Every label issued while Redis was away names frames of this
		// log now.
		for _, l := range s.labelList() {
			if l.gen == r.st().Gen() || l.from < r.pendingFrom {
				continue
			}
			if err := r.st().SetAlias(ctx, l.gen, l.from, h.cfg.Redis.Lease+h.cfg.Redis.Retention); err != nil {
				h.reps.report(err)
				return false
			}
		}
	}
	// Append what Redis lacks, oldest first, in batches.
	m, err := r.st().Meta(ctx)
	h.reps.report(err)
	if err != nil {
		return false
	}
	next := max(r.pendingFrom, m.Newest+1)
	if m.Newest == 0 {
		next = r.pendingFrom
	} else if m.Newest+1 < r.pendingFrom {
		// Redis lost frames it had acknowledged (a failover to a replica
		// that lagged behind): put them back from the local log too, or
		// every append is refused as out of order, for good. If the local
		// log no longer has them, the stream ends below.
		next = m.Newest + 1
	}
	oldest, newest := s.log.Bounds()
	if next < oldest && next <= newest {
		if m.Newest > 0 {
			// The local log lost frames Redis never got: the Redis log
			// cannot continue without a hole. End the stream.
			h.log.Warn().Str("stream", genText(s.gen)).Msg("frames served while Redis was down are no longer buffered; ending the stream (clients reconnect and get a sync event)")
			r.demote.Store(true)
			s.closeBody()
			return false
		}
		next = oldest
	}
	var batch [][]byte
	var buf []byte
	size := 0
	first := next
	for seq := next; seq <= newest; seq++ {
		var last uint64
		b, last, err := s.log.Read(seq-1, buf[:0], 1)
		if err != nil || last != seq {
			return false
		}
		batch = append(batch, append([]byte(nil), b...))
		size += len(b)
		if len(batch) == 256 || size >= stageBytes || seq == newest {
			// r.upID is the newest frame's upstream id: only the last batch
			// may record it. An earlier one records none (the local log
			// does not keep each frame's), so that a successor taking over
			// a write-back cut short reconnects without an id and puts a
			// marker in, rather than resuming the upstream past frames
			// Redis never got.
			upID := ""
			if seq == newest {
				upID = string(r.upID)
			}
			if err := r.st().AppendContext(ctx, first, batch, upID); err != nil {
				h.reps.report(err)
				return false
			}
			first, batch, size = seq+1, batch[:0], 0
		}
	}
	h.log.Info().Str("stream", genText(s.gen)).Uint64("from", next).Uint64("to", newest).Msg("Redis answers again; frames served meanwhile written back")
	r.setPending(0)
	return true
}

// genAfter reports whether generation a sorts after b.
func genAfter(a, b replay.Gen) bool { return string(a[:]) > string(b[:]) }

// supersededBy reports (shared mode) that the key's index names a newer
// generation than this owner's log st: another replica's stream for the key
// won, so this one ends (its clients reconnect and follow that one).
func (s *stream) supersededBy(st *redisstore.Store) bool {
	r, h := s.rep, s.hub
	if r.keyHash == "" {
		return false
	}
	cur, ok, err := redisstore.Index(context.Background(), h.reps.rdb, r.keyHash, h.cfg.Redis.Timeout)
	h.reps.report(err)
	if err != nil || !ok || !genAfter(cur, st.Gen()) {
		return false
	}
	h.log.Warn().Str("stream", genText(s.gen)).Str("index", genText(cur)).Msg("the key's stream continues under a newer generation elsewhere; ending this one")
	r.superseded.Store(true)
	s.closeBody()
	return true
}

// retryEvery is how often a degraded owner tries Redis again: often enough
// to renew its lease before a follower would take it over.
func (s *stream) retryEvery() time.Duration {
	return min(time.Second, s.hub.cfg.Redis.Lease/6)
}

// closeBody interrupts a blocked upstream read, so the run loop sees a
// demotion at once.
func (s *stream) closeBody() {
	if b, ok := s.body.Load().(interface{ CloseWithError(error) error }); ok {
		_ = b.CloseWithError(errStopped)
	}
}

// startRenew keeps the owner's lease alive: every third of its life, and the
// index entry and alias records with it.
func (s *stream) startRenew() {
	r := s.rep
	if r.st() == nil || r.stopRenew != nil || r.closed {
		return
	}
	r.stopRenew, r.renewDone = make(chan struct{}), make(chan struct{})
	go s.renewLoop(r.st(), r.stopRenew, r.renewDone)
}

func (s *stream) stopRenewLoop() {
	r := s.rep
	if r.stopRenew == nil {
		return
	}
	close(r.stopRenew)
	<-r.renewDone
	r.stopRenew, r.renewDone = nil, nil
}

// lostLog starts the write-back of an owner whose log st Redis no longer has.
// It takes wmu without waiting on it while stop is open: writeBack holds wmu
// while it stops this loop.
func (s *stream) lostLog(st *redisstore.Store, stop chan struct{}) {
	r := s.rep
	for !r.wmu.TryLock() {
		select {
		case <-stop:
			return
		case <-s.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	defer r.wmu.Unlock()
	if r.st() != st || r.pendingFrom != 0 || r.role.Load() != roleOwner {
		return // moved on, or a write-back is on its way already
	}
	s.flushLocked() // staged frames: their append fails and starts it
	if r.pendingFrom == 0 {
		next := s.seq.Load() + 1
		s.relabel(next)
		r.setPending(next)
		s.startWriteBack()
	}
}

func (s *stream) renewLoop(st *redisstore.Store, stop, done chan struct{}) {
	defer close(done)
	h := s.hub
	lease := h.cfg.Redis.Lease
	t := time.NewTimer(lease / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-s.stop:
			return
		case <-t.C:
		}
		if s.rep.st() != st {
			return // the stream moved to another log
		}
		_, err := st.Renew(context.Background())
		h.reps.report(err)
		switch {
		case err == nil:
			if s.supersededBy(st) {
				return
			}
			keys := []string{}
			if s.rep.keyHash != "" {
				keys = append(keys, redisstore.IndexKey(s.rep.keyHash))
			}
			for _, l := range s.labelList() {
				if l.gen != st.Gen() && l.from > 0 {
					keys = append(keys, redisstore.AliasKey(l.gen))
				}
			}
			h.reps.report(st.Refresh(context.Background(), lease+h.cfg.Redis.Retention, keys...))
			t.Reset(lease / 3)
		case errors.Is(err, redisstore.ErrFenced):
			h.log.Warn().Err(err).Str("stream", genText(s.gen)).Msg("lost the stream's lease")
			s.rep.demote.Store(true)
			s.closeBody()
			return
		case errors.Is(err, redisstore.ErrUnknownGeneration):
			// The log is gone (Redis restarted empty). Waiting for the next
			// append to find that out left a quiet owner reading the
			// upstream beside the stream another replica opened for the key
			// meanwhile, for as long as the upstream stayed quiet. Do what a
			// failed append does: a new label from the next frame on, and a
			// write-back that makes a log of it and settles the key.
			s.lostLog(st, stop)
			return
		default:
			// No answer: the next append finds out and the owner goes on
			// alone; keep trying.
			t.Reset(lease / 6)
		}
	}
}
