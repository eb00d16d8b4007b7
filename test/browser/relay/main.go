// Command relay is the browser tests' TCP relay between a client and
// lastevent: it cuts SSE connections from the server side at random points
// (seeded) or on request, and logs when it cut and when requests came, so a
// test can check that the client reconnects by itself, and how long it
// waited. It prints one JSON line {"listen": ..., "control": ...} on stdout.
//
// Only connections that carry an SSE response (Content-Type
// text/event-stream) are cut; page loads pass untouched. With -cuts N, each
// SSE response gets a byte budget drawn from [-min, -max] (counted from the
// end of its header, chunked framing included) and is cut where the budget
// ends, mid-frame or not, until N cuts were made: 3 in 4 by a reset (RST),
// the others by a plain close (FIN).
//
// Control (on -control):
//
//	POST /cut?kind=reset|close  cut every SSE connection now; answers the count
//	GET /log                    JSON list of what happened: [{"t": unix ms, "conn", "kind", ...}]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type entry struct {
	T           float64 `json:"t"`
	Conn        int     `json:"conn"`
	Kind        string  `json:"kind"` // accept, request, sse, cut, end
	Line        string  `json:"line,omitempty"`
	LastEventID string  `json:"lastEventId,omitempty"`
	SSE         bool    `json:"sse,omitempty"` // a request whose Accept names text/event-stream
	How         string  `json:"how,omitempty"` // reset or close
	Bytes       int     `json:"bytes,omitempty"`
}

type relay struct {
	target   string
	seed     uint64
	min, max int
	cutsLeft atomic.Int64
	settle   time.Duration
	mu       sync.Mutex
	log      []entry
	conns    map[*conn]struct{}
	next     int
}

type conn struct {
	id       int
	client   net.Conn
	upstream net.Conn
	mu       sync.Mutex // serializes writes to client with a cut
	sse      bool
	cut      bool
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "client-facing address")
	control := flag.String("control", "127.0.0.1:0", "control address")
	target := flag.String("target", "", "lastevent's host:port")
	seed := flag.Uint64("seed", 1, "seed of the cut points")
	cuts := flag.Int("cuts", 0, "random cuts to make in all (0: only on POST /cut)")
	lo := flag.Int("min", 1, "smallest byte budget of an SSE response")
	hi := flag.Int("max", 3000, "largest byte budget of an SSE response")
	flag.Parse()
	if *target == "" || *lo < 1 || *hi < *lo {
		fmt.Fprintln(os.Stderr, "relay: -target needed, 1 <= -min <= -max")
		os.Exit(2)
	}
	r := &relay{target: *target, seed: *seed, min: *lo, max: *hi, settle: 10 * time.Millisecond, conns: map[*conn]struct{}{}}
	r.cutsLeft.Store(int64(*cuts))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
	cln, err := net.Listen("tcp", *control)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /cut", func(w http.ResponseWriter, req *http.Request) {
		how := req.URL.Query().Get("kind")
		if how == "" {
			how = "reset"
		}
		fmt.Fprintln(w, r.cutAll(how))
	})
	mux.HandleFunc("GET /log", func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		b, _ := json.Marshal(r.log)
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	go func() { _ = http.Serve(cln, mux) }()
	b, _ := json.Marshal(map[string]string{"listen": ln.Addr().String(), "control": cln.Addr().String()})
	fmt.Println(string(b))
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			os.Exit(1)
		}
		go r.serve(c)
	}
}

func now() float64 { return float64(time.Now().UnixMicro()) / 1000 }

func (r *relay) record(e entry) {
	e.T = now()
	r.mu.Lock()
	r.log = append(r.log, e)
	r.mu.Unlock()
}

func (r *relay) serve(client net.Conn) {
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		client.Close()
		return
	}
	r.mu.Lock()
	c := &conn{id: r.next, client: client, upstream: up}
	r.next++
	r.conns[c] = struct{}{}
	r.mu.Unlock()
	r.record(entry{Conn: c.id, Kind: "accept"})
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
		client.Close()
		up.Close()
	}()
	go r.requests(c)
	r.responses(c)
}

// requests copies client bytes to lastevent, logging each request line.
func (r *relay) requests(c *conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.client.Read(buf)
		if n > 0 {
			logRequest(r, c, buf[:n])
			if _, werr := c.upstream.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if tc, ok := c.upstream.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

func logRequest(r *relay, c *conn, b []byte) {
	head, _, _ := bytes.Cut(b, []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\r\n")
	m, _, ok := strings.Cut(lines[0], " ")
	if !ok || (m != "GET" && m != "POST" && m != "HEAD" && m != "PUT" && m != "DELETE" && m != "OPTIONS") {
		return // a body, or the rest of a request
	}
	e := entry{Conn: c.id, Kind: "request", Line: lines[0]}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ":")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "last-event-id":
			e.LastEventID = strings.TrimSpace(v)
		case "accept":
			e.SSE = strings.Contains(v, "text/event-stream")
		}
	}
	r.record(e)
}

// responses copies lastevent's bytes to the client, finds SSE responses and
// cuts them where their budget ends.
func (r *relay) responses(c *conn) {
	rng := rand.New(rand.NewPCG(r.seed, uint64(c.id)))
	buf := make([]byte, 32<<10)
	var head []byte       // the response header being read
	inHead := true        // reading a response header
	budget, sent := -1, 0 // bytes of SSE body this response may carry; -1: no cut
	for {
		n, err := c.upstream.Read(buf)
		b := buf[:n]
		for len(b) > 0 {
			if !inHead && !c.sse && bytes.HasPrefix(b, []byte("HTTP/1.")) {
				inHead, head = true, head[:0] // the next response on a keep-alive connection
			}
			if inHead {
				head = append(head, b...)
				i := bytes.Index(head, []byte("\r\n\r\n"))
				if i < 0 {
					if !r.write(c, b) {
						return
					}
					b = nil
					continue
				}
				// Write the header (and what came with it) as one; body bytes
				// after it count against the budget below.
				hdrEnd := len(b) - (len(head) - (i + 4))
				if !r.write(c, b[:hdrEnd]) {
					return
				}
				b = b[hdrEnd:]
				inHead = false
				if isSSE(head[:i]) {
					c.mu.Lock()
					c.sse = true
					c.mu.Unlock()
					r.record(entry{Conn: c.id, Kind: "sse"})
					if r.cutsLeft.Load() > 0 {
						budget, sent = r.min+rng.IntN(r.max-r.min+1), 0
					}
				}
				continue
			}
			if budget >= 0 && sent+len(b) >= budget {
				part := b[:budget-sent]
				how := "reset"
				if rng.IntN(4) == 0 {
					how = "close"
				}
				if !r.write(c, part) {
					return
				}
				if r.cutsLeft.Add(-1) >= 0 {
					time.Sleep(r.settle) // let the partial frame reach the client first
					r.cut(c, how, sent+len(part))
					return
				}
				budget = -1 // no cuts left: relay the rest
				b = b[len(part):]
				continue
			}
			if !r.write(c, b) {
				return
			}
			sent += len(b)
			b = nil
		}
		if err != nil {
			if err != io.EOF {
				r.record(entry{Conn: c.id, Kind: "end", Line: err.Error()})
			}
			return
		}
	}
}

func isSSE(head []byte) bool {
	for _, l := range strings.Split(string(head), "\r\n")[1:] {
		k, v, _ := strings.Cut(l, ":")
		if strings.EqualFold(strings.TrimSpace(k), "content-type") && strings.Contains(v, "text/event-stream") {
			return true
		}
	}
	return false
}

func (r *relay) write(c *conn, b []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return false
	}
	_, err := c.client.Write(b)
	return err == nil
}

// cut ends c from the server side: a reset (RST) or a plain close (FIN).
func (r *relay) cut(c *conn, how string, at int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return
	}
	c.cut = true
	if tc, ok := c.client.(*net.TCPConn); ok && how == "reset" {
		_ = tc.SetLinger(0)
	}
	_ = c.client.Close()
	_ = c.upstream.Close()
	r.record(entry{Conn: c.id, Kind: "cut", How: how, Bytes: at})
}

func (r *relay) cutAll(how string) int {
	r.mu.Lock()
	var all []*conn
	for c := range r.conns {
		all = append(all, c)
	}
	r.mu.Unlock()
	n := 0
	for _, c := range all {
		c.mu.Lock()
		sse := c.sse
		c.mu.Unlock()
		if sse {
			r.cut(c, how, -1)
			n++
		}
	}
	return n
}
