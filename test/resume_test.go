package test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestResumeExact: a client that reconnects with its last id gets exactly the
// frames after it, then live frames, even while the upstream keeps sending.
func TestResumeExact(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_LINGER=30s")
	feed := up.Feed("/feed/a")
	c := dial(t, p.URL(), "/feed/a")
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the connection")
	}
	for i := 1; i <= 10; i++ {
		feed.Send(fmt.Sprintf("data: %d\n\n", i))
	}
	var seen []event
	for i := 1; i <= 4; i++ {
		seen = append(seen, c.Next(5*time.Second))
	}
	c.Close()
	resumeAt := seen[3]
	// The upstream goes on while nobody is connected and during the replay.
	for i := 11; i <= 20; i++ {
		feed.Send(fmt.Sprintf("data: %d\n\n", i))
	}
	time.Sleep(100 * time.Millisecond)
	c2 := dial(t, p.URL(), "/feed/a", "Last-Event-ID: "+resumeAt.ID)
	go func() {
		for i := 21; i <= 30; i++ {
			feed.Send(fmt.Sprintf("data: %d\n\n", i))
		}
	}()
	prev := resumeAt.ID
	for want := 5; want <= 30; want++ {
		ev := c2.Next(5 * time.Second)
		if ev.Type != "message" || ev.Data != fmt.Sprint(want) {
			t.Fatalf("after resume want data %d, got %v", want, ev)
		}
		if !(ev.ID > prev) || len(ev.ID) != len(prev) {
			t.Fatalf("id %q does not follow %q", ev.ID, prev)
		}
		prev = ev.ID
	}
	if feed.Total() != 1 {
		t.Fatalf("session resume opened %d upstream connections, want 1", feed.Total())
	}
	if got := strings.Count(p.Logs(), "upstream connect failed"); got != 0 {
		t.Fatalf("unexpected upstream failures: %d", got)
	}
}
