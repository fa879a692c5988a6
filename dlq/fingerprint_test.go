package dlq

import (
	"fmt"
	"strings"
	"testing"
)

func TestFingerprint(t *testing.T) {
	cases := []struct{ in, want string }{
		{"db timeout after 5s", "db timeout after <n>"},
		{"db timeout after 750ms", "db timeout after <n>"},
		{"order 12345 not found", "order <n> not found"},
		{"order o-123 not found", "order <id> not found"},
		{"user 3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b is locked", "user <uuid> is locked"},
		{"dial tcp 10.0.3.7:5432: connect: connection refused", "dial tcp <addr>: connect: connection refused"},
		{"dial tcp [fe80::1%eth0]:443: i/o timeout", "dial tcp <addr>: i/o timeout"},
		{"dial tcp [::1]:6379: refused", "dial tcp <addr>: refused"},
		{"lookup db-7.internal:5432 failed", "lookup <addr> failed"},
		{"GET https://ops:secret@api.example.com/v1/orders/99 returned 503", "GET <url> returned <n>"},
		{"mail to alice+x@example.com bounced", "mail to <email> bounced"},
		{"bad pointer 0xc000123abc", "bad pointer <hex>"},
		{"checksum deadbeef00112233 mismatch", "checksum <hex> mismatch"},
		{"  too   many\n spaces ", "too many spaces"},
		{"invalid payload: no id", "invalid payload: no id"},
		{"", ""},
	}
	for _, c := range cases {
		if got := Fingerprint(c.in); got != c.want {
			t.Errorf("Fingerprint(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestFingerprintGroupsOneCause(t *testing.T) {
	a := Fingerprint("payment 8812 for order ord_91ab declined by 10.1.1.1:8443 after 3 tries")
	b := Fingerprint("payment 17 for order ord_00ff declined by 10.1.1.2:8443 after 12 tries")
	if a != b {
		t.Errorf("one cause, two fingerprints:\n%q\n%q", a, b)
	}
	if c := Fingerprint("payment 17 for order ord_00ff refused by 10.1.1.2:8443 after 12 tries"); c == a {
		t.Errorf("two causes, one fingerprint %q", c)
	}
}

func TestFingerprintBounded(t *testing.T) {
	long := strings.Repeat("é failure ", 200)
	fp := Fingerprint(long)
	if len(fp) > MaxFingerprint || !strings.HasSuffix(fp, "…") {
		t.Errorf("fingerprint of %d bytes: %d bytes, %q", len(long), len(fp), fp[len(fp)-10:])
	}
	if got := Fingerprint("bad byte \xff here"); got != "bad byte \uFFFD here" {
		t.Errorf("invalid UTF-8: %q", got)
	}
}

func TestFingerprintCacheBounded(t *testing.T) {
	c := fingerprints{}
	for i := 0; i < 3*maxCachedFingerprints; i++ {
		c.of(fmt.Sprintf("order %d failed", i))
	}
	if len(c) > maxCachedFingerprints {
		t.Errorf("cache holds %d, bound %d", len(c), maxCachedFingerprints)
	}
	if c.of("order 7 failed") != "order <n> failed" {
		t.Error("cached fingerprint wrong")
	}
}
