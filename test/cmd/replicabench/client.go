package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/lastevent/lastevent/test/load"
)

// sse is one SSE connection over raw TCP, read with test/load's light
// parsers. lastevent treats a request as SSE only when it sends
// Accept: text/event-stream.
type sse struct {
	c       net.Conn
	sentAt  time.Time // just before the request was written
	head    load.ResponseHead
	rest    []byte // body bytes read with the head
	buf     []byte
	parser  load.SSEParser
	decoder load.ChunkedDecoder
}

var errStop = errors.New("stopped by the caller")

// dialSSE connects to addr, sends GET path (with Last-Event-ID when lastID
// is set) and reads the response head; a status other than 200 is an error.
func dialSSE(addr, path, lastID string, timeout time.Duration) (*sse, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	req := fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n", path, addr)
	if lastID != "" {
		req = fmt.Appendf(req, "Last-Event-ID: %s\r\n", lastID)
	}
	req = append(req, "\r\n"...)
	s := &sse{c: c, buf: make([]byte, 16<<10)}
	_ = c.SetDeadline(time.Now().Add(timeout))
	s.sentAt = time.Now()
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, fmt.Errorf("write: %w", err)
	}
	n, end := 0, -1
	for end < 0 {
		if n == len(s.buf) {
			c.Close()
			return nil, errors.New("response head too large")
		}
		m, err := c.Read(s.buf[n:])
		n += m
		end = load.HeadEnd(s.buf[:n])
		if end < 0 && err != nil {
			c.Close()
			return nil, fmt.Errorf("head: %w", err)
		}
	}
	s.head, err = load.ParseResponseHead(s.buf[:end])
	if err != nil {
		c.Close()
		return nil, err
	}
	if s.head.Status != 200 {
		c.Close()
		return nil, fmt.Errorf("status %d", s.head.Status)
	}
	s.rest = append([]byte(nil), s.buf[end:n]...)
	_ = c.SetDeadline(time.Time{})
	return s, nil
}

// run reads events until the connection ends, the deadline (if not zero)
// passes, or onEvent returns false (then it returns errStop). now is the
// time the bytes holding the event were read.
func (s *sse) run(deadline time.Time, onEvent func(ev *load.Event, now int64) bool) error {
	_ = s.c.SetReadDeadline(deadline)
	var now int64
	stop := false
	emit := func(ev *load.Event) {
		if !stop && !onEvent(ev, now) {
			stop = true
		}
	}
	body := func(b []byte) { s.parser.Feed(b, emit) }
	feed := func(b []byte) error {
		now = time.Now().UnixNano()
		if !s.head.Chunked {
			body(b)
		} else if done, err := s.decoder.Feed(b, body); err != nil {
			return err
		} else if done {
			return io.EOF
		}
		if stop {
			return errStop
		}
		return nil
	}
	if len(s.rest) > 0 {
		if err := feed(s.rest); err != nil {
			return err
		}
		s.rest = nil
	}
	for {
		n, err := s.c.Read(s.buf)
		if n > 0 {
			if ferr := feed(s.buf[:n]); ferr != nil {
				return ferr
			}
		}
		if err != nil {
			return err
		}
	}
}

func (s *sse) close() { s.c.Close() }

// check follows one client's events: sequences (from the generator's data)
// must go up by one and lastevent's ids must increase as strings.
type check struct {
	lastSeq int64
	lastID  []byte
	// counters
	events, dups, gaps, idRegressions, syncs, malformed, noID int64
}

// isSync reports an explicit discontinuity event (sync-required,
// system-sync): the generator's own events have no event type.
func isSync(ev *load.Event) bool {
	return len(ev.Type) > 0 && !bytes.Equal(ev.Type, []byte("message"))
}

// see checks ev and returns its sequence and send time (ok false for a sync
// or malformed event).
func (c *check) see(ev *load.Event) (seq, sent int64, ok bool) {
	if ev.HasID {
		if c.lastID != nil && bytes.Compare(ev.ID, c.lastID) <= 0 {
			c.idRegressions++
		}
		c.lastID = append(c.lastID[:0], ev.ID...)
	} else {
		c.noID++
	}
	if isSync(ev) {
		c.syncs++
		c.lastSeq = 0 // an announced discontinuity: the next sequence may jump
		return 0, 0, false
	}
	seq, sent, ok = load.ParsePayload(ev.Data)
	if !ok {
		c.malformed++
		return 0, 0, false
	}
	c.events++
	switch {
	case c.lastSeq == 0:
	case seq <= c.lastSeq:
		c.dups++
	case seq > c.lastSeq+1:
		c.gaps += seq - c.lastSeq - 1
	}
	if seq > c.lastSeq {
		c.lastSeq = seq
	}
	return seq, sent, true
}
