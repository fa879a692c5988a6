//go:build redisha

package redisha

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/warrenmq/warren/dedupe"
)

// TestClusterStoreFollowsAKilledMaster: once a replica took over from a
// killed master, the store's batch and single calls reach it at once,
// not after go-redis's periodic slot reload (a minute); and while the
// master is down, only its own keys fail.
func TestClusterStoreFollowsAKilledMaster(t *testing.T) {
	url := clusterURL(t)
	heal(t)
	c := client(t, url)
	prefix := fmt.Sprintf("storefollows-%d", time.Now().UnixNano())
	deletePrefix(t, c, prefix)
	s, err := dedupe.NewRedis(c, dedupe.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n := 0
	refs := func() []dedupe.Ref {
		var r []dedupe.Ref
		for range 64 {
			n++
			r = append(r, dedupe.Ref{Key: dedupe.Key(prefix, "q", fmt.Sprint(n)), Owner: "o"})
		}
		return r
	}
	// round claims and marks done 64 fresh keys and returns how many
	// calls failed.
	round := func() (failed int) {
		r := refs()
		for _, res := range s.ClaimAll(ctx, r, time.Minute) {
			if res.Err != nil {
				failed++
			}
		}
		for _, err := range s.MarkDoneAll(ctx, r, time.Minute) {
			if err != nil {
				failed++
			}
		}
		for _, ref := range r[:8] {
			if _, err := s.Claim(ctx, ref.Key+"-one", "o", time.Minute); err != nil {
				failed++
			}
		}
		return failed
	}
	if f := round(); f != 0 {
		t.Fatalf("%d calls failed before the fault", f)
	}
	master, replica := clusterMaster(t, url)
	t.Cleanup(func() { heal(t) })
	kill(t, master)
	// While the master is down, keys of other masters still work.
	f := round()
	t.Logf("while the master was down %d of %d calls failed", f, 2*64+8)
	if f == 2*64+8 {
		t.Errorf("while one master was down every call failed, want only its keys to")
	}
	waitFor(t, time.Minute, "the replica to take over", func() bool { return role(replica) == "master" })
	took := time.Now()
	waitFor(t, 15*time.Second, "every call to succeed after the failover", func() bool { return round() == 0 })
	t.Logf("the store followed the failover %s after the replica took over", time.Since(took).Round(time.Millisecond))
}
