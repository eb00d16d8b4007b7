package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/redisstore"
)

// Two owners of one generation: once the second took the lease, every write
// of the first is refused with ErrFenced and changes nothing.
func TestFencingRefusesTheStaleOwner(t *testing.T) {
	srv := sharedServer(t)
	ctx := context.Background()
	a := owner(t, srv.client(t), 100, "node-a")
	appendRange(t, a, 1, 3)

	// Each node has its own client, as replicas do.
	b := open(t, srv.client(t), a.Gen(), 100, "node-b")
	_, err := b.Acquire(ctx, time.Second)
	if !errors.Is(err, redisstore.ErrLeaseHeld) || !strings.Contains(err.Error(), `"node-a"`) {
		t.Fatalf("Acquire while node-a holds the lease: err = %v, want ErrLeaseHeld naming node-a", err)
	}
	if err := b.Append(4, frame(4)); !errors.Is(err, redisstore.ErrFenced) {
		t.Fatalf("Append by a node without the lease: err = %v, want ErrFenced", err)
	}

	// node-a stalls (a GC pause, a partition) past its lease; node-b takes over.
	staleToken := a.Lease().Token
	expireLease(t, srv, a.Gen())
	lb, err := b.Acquire(ctx, lease)
	if err != nil {
		t.Fatalf("Acquire after the lease expired: %v", err)
	}
	if lb.Token <= staleToken {
		t.Fatalf("new token %d not above the stale one %d", lb.Token, staleToken)
	}

	// The stale owner wakes up and carries on as if nothing happened.
	if err := a.Append(4, []byte("stale\n")); !errors.Is(err, redisstore.ErrFenced) {
		t.Fatalf("stale Append: err = %v, want ErrFenced", err)
	}
	if err := a.AppendContext(ctx, 4, [][]byte{[]byte("stale\n")}, "x"); !errors.Is(err, redisstore.ErrFenced) {
		t.Fatalf("stale AppendContext: err = %v, want ErrFenced", err)
	}
	if err := a.SetUpstreamID(ctx, "stale"); !errors.Is(err, redisstore.ErrFenced) {
		t.Fatalf("stale SetUpstreamID: err = %v, want ErrFenced", err)
	}
	if _, err := a.Renew(ctx); !errors.Is(err, redisstore.ErrFenced) {
		t.Fatalf("stale Renew: err = %v, want ErrFenced", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatalf("stale Release: %v", err)
	}

	appendRange(t, b, 4, 5)
	got, last, err := a.Read(0, nil, 1<<20) // the stale node can still read
	if err != nil || last != 5 || !bytes.Equal(got, frames(1, 5)) {
		t.Fatalf("Read = %q, %d, %v", got, last, err)
	}
	m, err := b.Meta(ctx)
	if err != nil || m.Holder != "node-b" || m.Owner != "node-b" || m.Token != lb.Token || m.UpstreamID != "" {
		t.Fatalf("Meta = %+v, %v", m, err)
	}
	// The stale node's Release did not free node-b's lease.
	if m.LeaseTTL <= 0 {
		t.Fatalf("lease TTL %v after the stale Release", m.LeaseTTL)
	}
}

// A fenced token is dead even when the script call that carries it was sent
// before the takeover: the check happens inside the append script.
func TestFencingRace(t *testing.T) {
	srv := sharedServer(t)
	ctx := context.Background()
	a := owner(t, srv.client(t), 1000, "node-a")
	b := open(t, srv.client(t), a.Gen(), 1000, "node-b")
	appendRange(t, a, 1, 1)

	done := make(chan uint64)
	go func() {
		seq := uint64(2)
		for ; ; seq++ {
			if err := a.Append(seq, frame(seq)); err != nil {
				if !errors.Is(err, redisstore.ErrFenced) {
					t.Errorf("Append(%d): %v", seq, err)
				}
				break
			}
		}
		done <- seq
	}()
	time.Sleep(20 * time.Millisecond)
	expireLease(t, srv, a.Gen())
	if _, err := b.Acquire(ctx, lease); err != nil {
		t.Fatal(err)
	}
	refused := <-done
	m, err := b.Meta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Newest != refused-1 {
		t.Fatalf("newest %d, but node-a was refused at %d", m.Newest, refused)
	}
	appendRange(t, b, m.Newest+1, m.Newest+3)
	got, last, err := b.Read(0, nil, 1<<30)
	if err != nil || last != m.Newest+3 || !bytes.Equal(got, frames(1, last)) {
		t.Fatalf("Read(0): %d bytes, last %d, %v", len(got), last, err)
	}
	t.Logf("node-a appended %d frames before it was fenced", refused-1)
}

// A new owner reads meta and continues at newest+1, reconnecting to the
// upstream with the upstream's own last id.
func TestTakeover(t *testing.T) {
	srv := sharedServer(t)
	ctx := context.Background()
	a := owner(t, srv.client(t), 100, "node-a")
	for seq := uint64(1); seq <= 10; seq++ {
		if err := a.AppendContext(ctx, seq, [][]byte{frame(seq)}, fmt.Sprint("up-", seq)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.SetUpstreamID(ctx, "up-10b"); err != nil {
		t.Fatal(err)
	}

	b := open(t, srv.client(t), a.Gen(), 100, "node-b")
	m, err := b.Meta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Gen != a.Gen() || m.Oldest != 1 || m.Newest != 10 || m.UpstreamID != "up-10b" ||
		m.Holder != "node-a" || m.Owner != "node-a" || m.Token != 1 || m.LeaseTTL <= 0 || m.LeaseTTL > lease {
		t.Fatalf("Meta = %+v", m)
	}
	if m.Bytes != int64(len(frames(1, 10))) {
		t.Fatalf("Meta.Bytes = %d, want %d", m.Bytes, len(frames(1, 10)))
	}

	// A clean hand-off: node-a releases (a rollout), node-b takes over at once.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Append(11, frame(11)); !errors.Is(err, redisstore.ErrFenced) {
		t.Fatalf("Append after Release: err = %v, want ErrFenced", err)
	}
	if _, err := b.Acquire(ctx, lease); err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	m, err = b.Meta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(m.Newest+2, frame(m.Newest+2)); !errors.Is(err, replay.ErrOutOfOrder) {
		t.Fatalf("Append skipping a sequence: err = %v, want ErrOutOfOrder", err)
	}
	for seq := m.Newest + 1; seq <= 15; seq++ {
		if err := b.AppendContext(ctx, seq, [][]byte{frame(seq)}, fmt.Sprint("up-", seq)); err != nil {
			t.Fatal(err)
		}
	}
	// A client resuming at 7 on any node gets 8..15, no gap, no duplicate.
	for _, s := range []*redisstore.Store{a, b} {
		got, last, err := s.Read(7, nil, 1<<20)
		if err != nil || last != 15 || !bytes.Equal(got, frames(8, 15)) {
			t.Fatalf("Read(7) = %q, %d, %v", got, last, err)
		}
	}
	m, _ = b.Meta(ctx)
	if m.UpstreamID != "up-15" || m.Owner != "node-b" || m.Token != 2 {
		t.Fatalf("Meta after takeover = %+v", m)
	}
}

// An owner whose lease lapsed while nobody took it over keeps its token:
// Renew takes the lease again and its appends go on.
func TestRenewAfterLapseWithoutTakeover(t *testing.T) {
	srv := sharedServer(t)
	ctx := context.Background()
	a := owner(t, srv.client(t), 100, "node-a")
	appendRange(t, a, 1, 2)
	expireLease(t, srv, a.Gen())
	l, err := a.Renew(ctx)
	if err != nil {
		t.Fatalf("Renew after the lease lapsed: %v", err)
	}
	if l.Token != 1 || l.TTL != lease || time.Until(l.Expires) <= 0 || !l.RenewAt().Before(l.Expires) {
		t.Fatalf("Lease = %+v", l)
	}
	appendRange(t, a, 3, 4)
	m, err := a.Meta(ctx)
	if err != nil || m.Holder != "node-a" || m.LeaseTTL <= 0 {
		t.Fatalf("Meta = %+v, %v", m, err)
	}
}

// Create refuses an existing generation; Acquire refuses one Redis does not
// know (so a node never resurrects a lost generation as an empty log).
func TestCreateAndAcquireGuards(t *testing.T) {
	srv := sharedServer(t)
	ctx := context.Background()
	a := owner(t, srv.client(t), 10, "node-a")
	b := open(t, srv.client(t), a.Gen(), 10, "node-b")
	if _, err := b.Create(ctx, lease); !errors.Is(err, redisstore.ErrLeaseHeld) {
		t.Fatalf("Create while leased: err = %v, want ErrLeaseHeld", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, lease); !errors.Is(err, redisstore.ErrGenerationExists) {
		t.Fatalf("Create of an existing generation: err = %v, want ErrGenerationExists", err)
	}
	// Acquiring twice from the same store is harmless (a retried call).
	l1, err := b.Acquire(ctx, lease)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := b.Acquire(ctx, lease)
	if err != nil || l2.Token != l1.Token {
		t.Fatalf("second Acquire = %+v, %v; want the same token %d", l2, err, l1.Token)
	}

	fresh, err := redisstore.New(ctx, srv.client(t), gens.Next(), 10, "node-c")
	if !errors.Is(err, redisstore.ErrUnknownGeneration) {
		t.Fatalf("New(fresh) err = %v", err)
	}
	defer fresh.Close()
	if _, err := fresh.Acquire(ctx, lease); !errors.Is(err, redisstore.ErrUnknownGeneration) {
		t.Fatalf("Acquire of an unknown generation: err = %v, want ErrUnknownGeneration", err)
	}
	if _, err := fresh.Meta(ctx); !errors.Is(err, redisstore.ErrUnknownGeneration) {
		t.Fatalf("Meta of an unknown generation: err = %v", err)
	}
}

// The keys expire a retention time after the last renewal or release, and
// not while an owner renews.
func TestRetention(t *testing.T) {
	srv := sharedServer(t)
	ctx := context.Background()
	c := srv.client(t)
	a := owner(t, c, 10, "node-a", redisstore.WithRetention(300*time.Millisecond))
	appendRange(t, a, 1, 3)
	meta, log, _ := redisstore.Keys(a.Gen())
	for _, k := range []string{meta, log} {
		ttl, err := c.PTTL(ctx, k).Result()
		if err != nil || ttl <= lease/2 || ttl > lease+300*time.Millisecond {
			t.Fatalf("PTTL %s = %v, %v; want the lease plus the retention", k, ttl, err)
		}
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if _, err := a.Meta(ctx); !errors.Is(err, redisstore.ErrUnknownGeneration) {
		t.Fatalf("Meta after the retention: err = %v, want ErrUnknownGeneration", err)
	}
	if n, _ := c.Exists(ctx, meta, log).Result(); n != 0 {
		t.Fatalf("%d keys left after the retention", n)
	}

	forever := owner(t, c, 10, "node-a", redisstore.WithRetention(-1))
	appendRange(t, forever, 1, 1)
	meta, log, _ = redisstore.Keys(forever.Gen())
	for _, k := range []string{meta, log} {
		if ttl, err := c.PTTL(ctx, k).Result(); err != nil || ttl != -1 {
			t.Fatalf("PTTL %s = %v, %v; want no expiry", k, ttl, err)
		}
	}
}

// expireLease deletes the lease key, as its expiry would, without waiting.
func expireLease(t *testing.T, srv *redisServer, gen replay.Gen) {
	t.Helper()
	_, _, leaseKey := redisstore.Keys(gen)
	if err := srv.client(t).Del(context.Background(), leaseKey).Err(); err != nil {
		t.Fatal(err)
	}
}
