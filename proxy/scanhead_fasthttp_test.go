package proxy

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// Heads fasthttp reads as an informational head followed by the final one
// (it skips empty lines before a status line, and extra spaces before the
// code): scanHead must not end at the informational head's empty line, or
// the head deadline is lifted before the final head, and a final head that
// stalls then blocks the stream for good (the case 8ccf185 fixed for plain
// 103s).
func TestScanHeadAgreesWithFasthttpOnInterimHeads(t *testing.T) {
	for _, in := range []string{
		"HTTP/1.1  103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n",
		"\r\nHTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n",
	} {
		var resp fasthttp.Response
		resp.SkipBody = true
		if err := resp.Read(bufio.NewReader(strings.NewReader(in))); err != nil || resp.StatusCode() != 200 {
			t.Logf("%q: fasthttp reads status %d, %v: not a case", in, resp.StatusCode(), err)
			continue
		}
		final := strings.Index(in, "HTTP/1.1 200")
		sc := &streamConn{}
		sc.inHead.Store(true)
		for i := 0; i < final; i++ {
			sc.scanHead([]byte{in[i]})
			if !sc.inHead.Load() {
				t.Errorf("%q: fasthttp reads the 103 and then the 200 head, but scanHead ended the head after byte %d (the 103 head's empty line), where the final head only starts (byte %d)", in, i+1, final)
				break
			}
		}
	}
}
