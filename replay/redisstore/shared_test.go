package redisstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/redisstore"
)

// TestAttrsAndAlias: attributes are fenced and come back from Resolve; an
// alias resolves to the log it names, with its first sequence, and a
// generation Redis does not hold is unknown.
func TestAttrsAndAlias(t *testing.T) {
	c := sharedServer(t).client(t)
	ctx := context.Background()
	st := owner(t, c, 10, "node-a")
	if err := st.SetAttrs(ctx, map[string]string{"khash": "abc", "headers": "X-A: 1\n"}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetAttrs(ctx, map[string]string{"token": "9"}); err == nil {
		t.Fatal("a reserved field was accepted")
	}
	other := open(t, c, st.Gen(), 10, "node-b")
	if err := other.SetAttrs(ctx, map[string]string{"khash": "evil"}); !errors.Is(err, redisstore.ErrFenced) {
		t.Fatalf("a non-owner set attributes: %v", err)
	}
	res, err := redisstore.Resolve(ctx, c, st.Gen(), time.Second)
	if err != nil || res.Log != st.Gen() || res.From != 0 || res.Attrs["khash"] != "abc" || res.Attrs["headers"] != "X-A: 1\n" || len(res.Attrs) != 2 {
		t.Fatalf("Resolve = %+v, %v", res, err)
	}
	label := gens.Next()
	if _, err := redisstore.Resolve(ctx, c, label, time.Second); !errors.Is(err, redisstore.ErrUnknownGeneration) {
		t.Fatalf("Resolve(unknown) err = %v", err)
	}
	if err := st.SetAlias(ctx, label, 42, time.Minute); err != nil {
		t.Fatal(err)
	}
	res, err = redisstore.Resolve(ctx, c, label, time.Second)
	if err != nil || res.Log != st.Gen() || res.From != 42 || res.Attrs["khash"] != "abc" {
		t.Fatalf("Resolve(alias) = %+v, %v", res, err)
	}
	ttl, err := c.PTTL(ctx, redisstore.AliasKey(label)).Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("alias ttl %v %v", ttl, err)
	}
	if err := st.Refresh(ctx, 2*time.Minute, redisstore.AliasKey(label)); err != nil {
		t.Fatal(err)
	}
	if ttl, _ := c.PTTL(ctx, redisstore.AliasKey(label)).Result(); ttl <= time.Minute {
		t.Fatalf("Refresh left the alias ttl at %v", ttl)
	}
}

// TestClaimIndex: of two generations racing for a key exactly one wins;
// the index moves on only from the generation it names.
func TestClaimIndex(t *testing.T) {
	c := sharedServer(t).client(t)
	ctx := context.Background()
	a, b := owner(t, c, 10, "node-a"), owner(t, c, 10, "node-b")
	key := "k-" + replay.ID{Gen: a.Gen()}.String()
	if _, ok, err := redisstore.Index(ctx, c, key, time.Second); ok || err != nil {
		t.Fatalf("empty index: ok %v err %v", ok, err)
	}
	won, err := a.ClaimIndex(ctx, key, replay.Gen{}, time.Minute)
	if err != nil || !won {
		t.Fatalf("first claim: %v %v", won, err)
	}
	if won, err := b.ClaimIndex(ctx, key, replay.Gen{}, time.Minute); err != nil || won {
		t.Fatalf("second claim from nothing won: %v %v", won, err)
	}
	if won, err := a.ClaimIndex(ctx, key, replay.Gen{}, time.Minute); err != nil || !won {
		t.Fatalf("the holder's own claim: %v %v", won, err)
	}
	if g, ok, err := redisstore.Index(ctx, c, key, time.Second); !ok || err != nil || g != a.Gen() {
		t.Fatalf("index = %v %v %v", g, ok, err)
	}
	if won, err := b.ClaimIndex(ctx, key, a.Gen(), time.Minute); err != nil || !won {
		t.Fatalf("move on from a: %v %v", won, err)
	}
	if won, err := a.ClaimIndex(ctx, key, replay.Gen{}, time.Minute); err != nil || won {
		t.Fatalf("a took it back: %v %v", won, err)
	}
	if g, _, _ := redisstore.Index(ctx, c, key, time.Second); g != b.Gen() {
		t.Fatalf("index = %v, want b", g)
	}
}

// TestWatch: a follower's mark lives for its ttl.
func TestWatch(t *testing.T) {
	c := sharedServer(t).client(t)
	ctx := context.Background()
	st := owner(t, c, 10, "node-a")
	follower := open(t, c, st.Gen(), 10, "node-b")
	if w, err := st.Watched(ctx); w || err != nil {
		t.Fatalf("watched before any mark: %v %v", w, err)
	}
	const ttl = time.Second // the check right after the mark has this much time
	if err := follower.Watch(ctx, ttl); err != nil {
		t.Fatal(err)
	}
	if w, err := st.Watched(ctx); !w || err != nil {
		t.Fatalf("not watched after the mark: %v %v", w, err)
	}
	time.Sleep(ttl + 300*time.Millisecond)
	if w, err := st.Watched(ctx); w || err != nil {
		t.Fatalf("still watched after the ttl: %v %v", w, err)
	}
}
