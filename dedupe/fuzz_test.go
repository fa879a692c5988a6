package dedupe_test

import (
	"testing"

	"github.com/warrenmq/warren/dedupe"
)

func FuzzKey(f *testing.F) {
	f.Add("", "orders", "abc-123")
	f.Add("app:dedupe", "q", "a:b{c}")
	f.Add("{", "}", "\x00\xff")
	f.Fuzz(func(t *testing.T, prefix, queue, id string) {
		k := dedupe.Key(prefix, queue, id)
		checkKey(t, k)
		if dedupe.Key(prefix, queue, id) != k {
			t.Fatalf("Key(%q, %q, %q) is not deterministic", prefix, queue, id)
		}
	})
}
