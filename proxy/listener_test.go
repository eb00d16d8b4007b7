package proxy

import "testing"

// TestHeadCleaner: control bytes in Last-Event-ID lines become '?', across
// read boundaries and keep-alive requests; other lines, and everything after
// a head that announces a body, stay as they are.
func TestHeadCleaner(t *testing.T) {
	in := "GET /a HTTP/1.1\r\nHost: x\r\nX-Other: a\x01b\r\nLast-Event-ID: \x01ab\x7fc\td\r\n\r\n" +
		"GET /b HTTP/1.1\r\nlast-event-id:\x1b\r\n\r\n" +
		"POST /c HTTP/1.1\r\nContent-Length: 5\r\n\r\n\x01\x02\x03\x04\x05" +
		"GET /d HTTP/1.1\r\nLast-Event-ID: \x01\r\n\r\n"
	want := "GET /a HTTP/1.1\r\nHost: x\r\nX-Other: a\x01b\r\nLast-Event-ID: ?ab?c\td\r\n\r\n" +
		"GET /b HTTP/1.1\r\nlast-event-id:?\r\n\r\n" +
		"POST /c HTTP/1.1\r\nContent-Length: 5\r\n\r\n\x01\x02\x03\x04\x05" +
		"GET /d HTTP/1.1\r\nLast-Event-ID: \x01\r\n\r\n" // after a body: left alone
	for _, step := range []int{1, 2, 3, 7, len(in)} {
		var h headCleaner
		b := []byte(in)
		for i := 0; i < len(b); i += step {
			h.clean(b[i:min(i+step, len(b))])
		}
		if string(b) != want {
			t.Errorf("reads of %d bytes:\n got %q\nwant %q", step, b, want)
		}
	}
}
