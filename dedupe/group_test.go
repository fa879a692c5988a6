package dedupe_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/dedupe"
)

// TestSlot checks the hash slot against the check value of CRC-16/XMODEM
// and the hash tag rules of the Redis Cluster specification.
func TestSlot(t *testing.T) {
	if got, want := dedupe.Slot("123456789"), 0x31C3%16384; got != want {
		t.Errorf("slot of the CRC-16/XMODEM check string = %d, want %d", got, want)
	}
	same := [][2]string{
		{"{user1000}.following", "{user1000}.followers"},
		{"foo{bar}{zap}", "bar"},
		{"foo{{bar}}zap", "{bar"},
		{"foo{}{bar}", "foo{}{bar}"},
		{dedupe.Key("p", "q", "id"), "q:id"},
		{dedupe.SameSlot(dedupe.Key("p", "q", "id"), "balance"), "q:id"},
	}
	for _, c := range same {
		if a, b := dedupe.Slot(c[0]), dedupe.Slot(c[1]); a != b {
			t.Errorf("slot(%q) = %d, slot(%q) = %d, want equal", c[0], a, c[1], b)
		}
	}
	if a, b := dedupe.Slot("foo{}{bar}"), dedupe.Slot("bar"); a == b {
		t.Errorf("an empty hash tag made %q hash as %q", "foo{}{bar}", "bar")
	}
}

// slotsMatchServer fails t unless Slot agrees with CLUSTER KEYSLOT of c,
// a cluster node, on keys of every shape Key makes and a few others.
func slotsMatchServer(t *testing.T, c redis.UniversalClient) {
	t.Helper()
	keys := []string{"", "a", "{", "}", "{}", "a{b}c", "a{}b{c}", "\xff\x00{\xfe}", "123456789"}
	for i := range 200 {
		keys = append(keys, dedupe.Key("warren", fmt.Sprint("queue-", i%7), fmt.Sprint("id-", i)))
	}
	keys = append(keys, dedupe.Key("p", "q", string(make([]byte, 300))), dedupe.Key("p{", "q}", "i d"))
	for _, k := range keys {
		want, err := c.ClusterKeySlot(context.Background(), k).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
		}
		if got := dedupe.Slot(k); int64(got) != want {
			t.Errorf("slot(%q) = %d, the server says %d", k, got, want)
		}
	}
}
