package dedupe_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/warrenmq/warren/dedupe"
)

// checkKey fails unless k is bounded and has one intact hash tag holding
// exactly one ":".
func checkKey(t *testing.T, k string) {
	t.Helper()
	if len(k) > dedupe.MaxKeyLen {
		t.Fatalf("len(Key) = %d > %d", len(k), dedupe.MaxKeyLen)
	}
	if strings.Count(k, "{") != 1 || strings.Count(k, "}") != 1 {
		t.Fatalf("Key %q: want exactly one { and one }", k)
	}
	open := strings.IndexByte(k, '{')
	if open < 1 || k[open-1] != ':' || !strings.HasSuffix(k, "}") {
		t.Fatalf("Key %q: want prefix:{...}", k)
	}
	if tag := k[open+1 : len(k)-1]; strings.Count(tag, ":") != 1 {
		t.Fatalf("Key %q: hash tag %q must have one ':'", k, tag)
	}
}

func TestKeyPlain(t *testing.T) {
	for _, c := range []struct{ prefix, queue, id, want string }{
		{"", "orders", "abc-123", "warren:{orders:abc-123}"},
		{"app:dedupe", "orders", "abc", "app:dedupe:{orders:abc}"},
		{"", "orders", "", "warren:{orders:}"},
		{"", "q", strings.Repeat("x", dedupe.MaxKeyPartLen), "warren:{q:" + strings.Repeat("x", dedupe.MaxKeyPartLen) + "}"},
	} {
		got := dedupe.Key(c.prefix, c.queue, c.id)
		if got != c.want {
			t.Errorf("Key(%q, %q, %q) = %q, want %q", c.prefix, c.queue, c.id, got, c.want)
		}
		checkKey(t, got)
	}
}

func TestKeyHostile(t *testing.T) {
	hostile := []string{
		strings.Repeat("a", 10<<10),
		strings.Repeat("x", dedupe.MaxKeyPartLen+1),
		"\x00\x01\xff\xfe binary",
		"café",
		"a:b",
		"{tag}",
		"}{",
		"with space",
		"tab\there",
		"new\nline",
		"h-" + strings.Repeat("0", 32),
	}
	seen := map[string]string{}
	for _, s := range hostile {
		for _, k := range []string{dedupe.Key("", "q", s), dedupe.Key("", s, "id"), dedupe.Key(s, "q", "id")} {
			checkKey(t, k)
		}
		k := dedupe.Key("", "q", s)
		if strings.Contains(k, s) {
			t.Errorf("Key kept hostile id %q as it is: %q", s, k)
		}
		if prev, ok := seen[k]; ok {
			t.Errorf("ids %q and %q share key %q", prev, s, k)
		}
		seen[k] = s
		if k2 := dedupe.Key("", "q", s); k2 != k {
			t.Errorf("Key is not deterministic: %q then %q", k, k2)
		}
	}
}

func TestKeyHashedPartsDoNotCollide(t *testing.T) {
	hashed := dedupe.Key("", "q", "a b")
	open := strings.IndexByte(hashed, '{')
	_, hashedID, _ := strings.Cut(hashed[open+1:len(hashed)-1], ":")
	if !strings.HasPrefix(hashedID, "h-") {
		t.Fatalf("id %q was not hashed: %q", "a b", hashed)
	}
	if spoof := dedupe.Key("", "q", hashedID); spoof == hashed {
		t.Fatalf("literal id %q has the same key as %q", hashedID, "a b")
	}
}

func TestBodyKeyID(t *testing.T) {
	const empty = "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if got := dedupe.BodyKeyID(nil); got != empty {
		t.Errorf("BodyKeyID(nil) = %q, want %q", got, empty)
	}
	if dedupe.BodyKeyID([]byte("a")) == dedupe.BodyKeyID([]byte("b")) {
		t.Error("different bodies share an id")
	}
	id := dedupe.BodyKeyID([]byte("payload"))
	if k := dedupe.Key("", "orders", id); k != "warren:{orders:"+id+"}" {
		t.Errorf("body id is not kept as it is: %q", k)
	}
}

// BenchmarkKey is the key of every delivery, dedupe or not.
func BenchmarkKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = dedupe.Key("warren", "orders.created", "01JDX4Z6W8C9Q2M3N4P5R6S7T8")
	}
}

// serverReply is an error reply of the Redis server, as go-redis gives it.
type serverReply string

func (e serverReply) Error() string { return string(e) }
func (serverReply) RedisError()     {}

// A server that cannot serve right now (full, unable to persist, failing
// over, refusing our credentials) is unavailable: the worker fails closed
// and the message goes round, never to the DLQ unrun. A refusal that
// retrying does not change is not.
func TestUnavailableServerReplies(t *testing.T) {
	for reply, want := range map[string]bool{
		"OOM command not allowed when used memory > 'maxmemory'.":           true,
		"MISCONF Redis is configured to save RDB snapshots, but it's not":   true,
		"LOADING Redis is loading the dataset in memory":                    true,
		"READONLY You can't write against a read only replica.":             true,
		"NOAUTH Authentication required.":                                   true,
		"WRONGPASS invalid username-password pair or user is disabled.":     true,
		"NOPERM this user has no permissions to run the 'evalsha' command":  true,
		"CLUSTERDOWN The cluster is down":                                   true,
		"WRONGTYPE Operation against a key holding the wrong kind of value": false,
		"ERR unknown command":                                               false,
	} {
		if got := dedupe.Unavailable(fmt.Errorf("dedupe: claim %q: %w", "k", serverReply(reply))); got != want {
			t.Errorf("Unavailable(%q) = %v, want %v", reply, got, want)
		}
	}
}
