package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestSessionExpires(t *testing.T) {
	g := newGuard(Auth{Token: "s3cr3t-token-of-the-console"}, zap.NewNop())
	now := time.Now()
	issued := now.Add(-time.Hour).Truncate(time.Second)
	v := g.session(issued)
	if strings.Contains(v, "s3cr3t") {
		t.Fatalf("the session cookie holds the token: %q", v)
	}
	cases := []struct {
		name  string
		value string
		at    time.Time
		want  bool
	}{
		{"fresh", v, now, true},
		{"just before the end", v, issued.Add(sessionTTL), true},
		{"after the end", v, issued.Add(sessionTTL + time.Second), false},
		{"issued in the future", g.session(now.Add(time.Hour)), now, false},
		{"time moved forward", g.session(issued.Add(time.Hour))[:11] + v[11:], now, false},
		{"another token's", newGuard(Auth{Token: "another-token"}, zap.NewNop()).session(issued), now, false},
		{"no time", v[strings.Index(v, ".")+1:], now, false},
		{"empty", "", now, false},
	}
	for _, c := range cases {
		if got := g.validSession(c.value, c.at); got != c.want {
			t.Errorf("%s: validSession(%q) = %v, want %v", c.name, c.value, got, c.want)
		}
	}
	// Through who: a valid cookie signs in, an expired one does not.
	for _, c := range []struct {
		value string
		want  string
	}{{g.session(now), "token"}, {g.session(now.Add(-sessionTTL - time.Minute)), ""}} {
		r := httptest.NewRequest(http.MethodGet, "/groups", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: c.value})
		if got := g.who(r); got != c.want {
			t.Errorf("who with cookie %q = %q, want %q", c.value, got, c.want)
		}
	}
}
