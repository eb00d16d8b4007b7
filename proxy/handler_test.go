package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// A request is treated as SSE when it is a GET whose Accept names
// text/event-stream, unless with q=0, which says it is not acceptable.
func TestIsSSERequest(t *testing.T) {
	for _, tc := range []struct {
		method, accept string
		want           bool
	}{
		{"GET", "text/event-stream", true},
		{"GET", "text/html, text/event-stream;q=0.5", true},
		{"GET", "TEXT/EVENT-STREAM", true},
		{"GET", "text/event-stream;q=0", false},
		{"GET", "text/event-stream; q=0.0", false},
		{"GET", "text/event-stream;q=bogus", true},
		{"GET", "*/*", false},
		{"GET", "", false},
		{"POST", "text/event-stream", false},
	} {
		ctx := &fasthttp.RequestCtx{}
		ctx.Request.Header.SetMethod(tc.method)
		if tc.accept != "" {
			ctx.Request.Header.Set("Accept", tc.accept)
		}
		if got := isSSERequest(ctx); got != tc.want {
			t.Errorf("%s with Accept %q: SSE %v, want %v", tc.method, tc.accept, got, tc.want)
		}
	}
}
