// Command upstream is the scripted legacy upstream of the browser tests
// (test/browser/run.sh). It prints one JSON line {"addr": "host:port"} on
// stdout once it listens, and serves:
//
//	/harness.html        the test page: window.collect opens an EventSource and records what it sees
//	/corners             JSON list of the corner cases: [{"name", "types"}]
//	/corner/<name>       that case's bytes, chunk by chunk, then a "done" event; then holds the stream open
//	                     (?cors=1 adds Access-Control-Allow-Origin: *)
//	/count?interval=20ms an endless per-connection counter (see count), for the cut tests
//	/uri/...             one event whose data is the request target as the upstream got it, then "done"
//	/slow?delay=1s       waits that long before it answers, then one event "slow" and holds the stream
//
// It sends no ids of its own beyond what a corner case holds, and ignores
// Last-Event-ID, like the legacy services lastevent fronts.
package main

import (
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

//go:embed harness.html
var harness []byte

// A corner is a byte stream covering one corner of the SSE format, written
// chunk by chunk with a flush and a short pause between chunks, so that the
// parsers on the way see the splits. Types lists the event types the stream
// dispatches (the page listens for exactly those plus "message" and "done").
type corner struct {
	Name   string   `json:"name"`
	Types  []string `json:"types"`
	chunks []string
}

// done ends every case: the blank lines dispatch or drop whatever the case
// left pending (the same bytes go both ways, so both clients agree), and the
// page stops at the "done" event.
const done = "\n\nevent: done\ndata: done\n\n"

// bytewise splits s into one chunk per byte.
func bytewise(s string) []string {
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i : i+1]
	}
	return out
}

var corners = []corner{
	{Name: "basic", chunks: []string{"data: a\n\n"}},
	{Name: "two-events-one-chunk", chunks: []string{"data: a\n\ndata: b\n\n"}},
	{Name: "multi-line-data", chunks: []string{"data: a\ndata: b\ndata: c\n\n"}},
	{Name: "crlf", chunks: []string{"data: x\r\ndata: y\r\n\r\n"}},
	{Name: "cr-only", chunks: []string{"data: x\rdata: y\r\rdata: z\r\r"}},
	{Name: "cr-lf-split-across-chunks", chunks: []string{"data: x\r", "\ndata: y\r", "\n\r", "\n"}},
	{Name: "cr-then-cr-lf", chunks: []string{"data: a\r\r\ndata: b\n\n"}},
	{Name: "lf-cr", chunks: []string{"data: a\n\rdata: b\n\n"}},
	{Name: "bom-at-start", chunks: []string{"\ufeffdata: bom\n\n"}},
	{Name: "bom-split", chunks: []string{"\xef", "\xbb", "\xbfdata: bom\n\n"}},
	{Name: "bom-later-is-a-field-name", chunks: []string{"data: a\n\n\ufeffdata: b\n\ndata: c\n\n"}},
	{Name: "field-without-colon", chunks: []string{"data\n\n"}},
	{Name: "empty-data-lines", chunks: []string{"data\ndata\n\n", "data:\n\n", "data: \n\n"}},
	{Name: "space-stripping", chunks: []string{"data:nospace\n\ndata:  two spaces\n\ndata: trailing \n\ndata:\tTab\n\n"}},
	{Name: "colon-in-value", chunks: []string{"data: a:b: c\n\ndata::x\n\n"}},
	{Name: "comments", chunks: []string{": hello\n\n", ":\ndata: after comments\n: between\n\n", ":no space\n\n"}},
	{Name: "event-types", Types: []string{"custom", "x y"}, chunks: []string{"event: custom\ndata: c\n\n", "data: back to message\n\n", "event: x y\ndata: spaced\n\n"}},
	{Name: "event-without-data-is-dropped", Types: []string{"lonely"}, chunks: []string{"event: lonely\n\n", "data: after\n\n"}},
	{Name: "empty-event-is-message", chunks: []string{"event:\ndata: e\n\n"}},
	{Name: "last-event-field-wins", Types: []string{"first", "second"}, chunks: []string{"event: first\nevent: second\ndata: x\n\n"}},
	{Name: "ids-of-the-upstream", chunks: []string{"id: 1\ndata: one\n\n", "id: a\x00b\ndata: nul id\n\n", "id\ndata: empty id\n\n", "id: 5\n\n", "data: after id-only\n\n"}},
	{Name: "retry-fields", chunks: []string{"retry: 1000\ndata: r1\n\n", "retry: abc\ndata: r2\n\n", "retry: 10\n\n", "retry\ndata: r3\n\n"}},
	{Name: "unknown-and-miscased-fields", chunks: []string{"foo: bar\ndata: u\n\n", "Data: no\ndata : no\nDATA: no\n\n", "data: yes\nfield\n\n"}},
	{Name: "many-blank-lines", chunks: []string{"\n\n\n\ndata: b\n\n\n\n\r\n\r\r\n"}},
	{Name: "utf8-split-mid-codepoint", chunks: []string{"data: h\xc3", "\xa9llo w\xc3\xb6rld \xe6\x97", "\xa5\xe6\x9c\xac \xf0\x9f", "\x98\x80\n\n"}},
	{Name: "invalid-utf8", chunks: []string{"data: \xff\xfe bad \xc3\n\n"}},
	{Name: "nul-in-data", chunks: []string{"data: a\x00b\n\n"}},
	{Name: "lone-cr-inside-data", chunks: []string{"data: a\rb\n\ndata: c\r\n"}},
	{Name: "long-line", chunks: []string{"data: " + strings.Repeat("0123456789", 20000), "\n\n"}},
	{Name: "many-lines", chunks: []string{strings.Repeat("data: line\n", 500) + "\n"}},
	{Name: "byte-by-byte", Types: []string{"t"}, chunks: bytewise("event: t\r\ndata: one\rdata: two\n\n: c\n\ndata: three\r\n\r\n")},
	{Name: "line-completed-by-a-later-chunk", chunks: []string{"data: no newline yet"}},
	{Name: "cr-at-chunk-end-then-lf", chunks: []string{"data: cr\r"}},
}

func main() {
	for i := range corners {
		if corners[i].Types == nil {
			corners[i].Types = []string{} // JSON [] rather than null
		}
	}
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /harness.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(harness)
	})
	mux.HandleFunc("GET /corners", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(corners)
	})
	mux.HandleFunc("GET /corner/{name}", serveCorner)
	mux.HandleFunc("GET /count", count)
	mux.HandleFunc("GET /uri/", func(w http.ResponseWriter, r *http.Request) {
		fl := streamHeaders(w)
		fmt.Fprintf(w, "data: %s%s", r.RequestURI, done)
		fl.Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("delay"))
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		fl := streamHeaders(w)
		fmt.Fprint(w, "data: slow\n\n")
		fl.Flush()
		<-r.Context().Done()
	})
	b, _ := json.Marshal(map[string]string{"addr": ln.Addr().String()})
	fmt.Println(string(b))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
}

func streamHeaders(w http.ResponseWriter) http.Flusher {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fl.Flush()
	return fl
}

func serveCorner(w http.ResponseWriter, r *http.Request) {
	var c *corner
	for i := range corners {
		if corners[i].Name == r.PathValue("name") {
			c = &corners[i]
		}
	}
	if c == nil {
		http.NotFound(w, r)
		return
	}
	if r.URL.Query().Has("cors") {
		w.Header().Set("Access-Control-Allow-Origin", "*")
	}
	fl := streamHeaders(w)
	for _, chunk := range append(c.chunks, done) {
		if _, err := w.Write([]byte(chunk)); err != nil {
			return
		}
		fl.Flush()
		time.Sleep(3 * time.Millisecond)
	}
	<-r.Context().Done() // hold the stream: an end would make both clients reconnect
}

// count sends event n = 1, 2, ... every interval, forever. Its frames vary so
// that cuts land in every part of a frame: the type is "other" for every
// fifth, the data is {"n":N,"pad":"xxx…"} with (N*37)%300 x's, and every
// seventh has a second data line "second line". expected() in cuts.test.mjs
// mirrors this.
func count(w http.ResponseWriter, r *http.Request) {
	interval, err := time.ParseDuration(r.URL.Query().Get("interval"))
	if err != nil || interval <= 0 {
		interval = 20 * time.Millisecond
	}
	fl := streamHeaders(w)
	t := time.NewTicker(interval)
	defer t.Stop()
	var b strings.Builder
	for n := 1; ; n++ {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		b.Reset()
		if n%5 == 0 {
			b.WriteString("event: other\n")
		}
		fmt.Fprintf(&b, "data: {\"n\":%d,\"pad\":\"%s\"}\n", n, strings.Repeat("x", (n*37)%300))
		if n%7 == 0 {
			b.WriteString("data: second line\n")
		}
		b.WriteString("\n")
		if _, err := w.Write([]byte(b.String())); err != nil {
			return
		}
		fl.Flush()
	}
}
