package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// LASTEVENT_MAX_FRAME_BYTES bounds a frame as lastevent stores and sends it:
// a frame of many empty data lines (each one byte in the upstream's data,
// seven once encoded as "data: " and LF) within the bound by its data alone
// took seven times the bound in the stream's buffer and in every client's
// writes. It is now dropped with a frame-too-large marker, and the frames
// around it, the one of the bound's size among them, come through. Found by
// review.
func TestFrameSizeCountsEncodedLines(t *testing.T) {
	const maxFrame = 64 << 10
	fits := "data: " + strings.Repeat("x", maxFrame-len("data: ")) + "\n\n"
	quit := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: before\n\n")
		fmt.Fprint(w, strings.Repeat("data\n", maxFrame-16)+"\n")
		fmt.Fprint(w, fits)
		fmt.Fprint(w, "data: after\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-quit:
		}
	}))
	defer up.Close()
	defer close(quit)
	srv, addr := serveInProcess(t, up.URL, zerolog.Nop(), "LASTEVENT_MAX_FRAME_BYTES=64KiB")
	c := mustOpenSSE(t, addr, "/feed")
	got := c.readEvents(t, 5)
	want := []string{"data: before", "event: sync-required", `data: {"reason":"frame-too-large"`, "data: " + fits[6:len(fits)-2], "data: after"}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Fatalf("event line %d: %.60q, want %.60q", i, got[i], want[i])
		}
	}
	if used := srv.hub.budget.Used(); used > 2*maxFrame {
		t.Fatalf("the stream's buffer takes %d bytes for frames of at most %d", used, maxFrame)
	}
}
