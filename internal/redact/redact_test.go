package redact

import (
	"errors"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"amqp://guest:guest@localhost:5672/", "amqp://guest:xxxxx@localhost:5672/"},
		{"amqp://localhost:5672/vh", "amqp://localhost:5672/vh"},
		{"redis://:s3cret@redis:6379/0", "redis://:xxxxx@redis:6379/0"},
		{"redis://a:p1@h1:1,redis://b:p2@h2:2", "redis://a:xxxxx@h1:1,redis://b:xxxxx@h2:2"},
		{"amqp://u:p%zz@host/", "<unparsable url>"},
		{"amqp://guest:gu,est9s3cret@broker/", "amqp://guest:xxxxx@broker/"},
		{"http://x,user:s3cret@host/", "http://x,user:xxxxx@host/"},
		{"amqp:user:s3cret@host/", "amqp://<redacted>"},
		{"user:s3cret@host", "user://<redacted>"},
		{"amqp:/user:s3cret@host/", "amqp://<redacted>"},
		{"redis://u:s3cret@h1:1,h2:2/0", "redis://u:xxxxx@h1:1,h2:2/0"},
		{"amqp:// ,A:s3cret@0", "<unparsable url>"},
	}
	for _, c := range cases {
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
		if strings.Contains(URL(c.in), "s3cret") {
			t.Errorf("secret leaked for %q", c.in)
		}
	}
}

func TestError(t *testing.T) {
	base := errors.New(`dial amqp://u:topsecret@h:5672/: refused (topsecret)`)
	err := Error(base, "amqp://u:topsecret@h:5672/")
	if strings.Contains(err.Error(), "topsecret") {
		t.Fatalf("password leaked: %v", err)
	}
	if !errors.Is(err, base) {
		t.Fatal("scrubbed error does not unwrap to the original")
	}
	if Error(nil, "x") != nil {
		t.Fatal("nil error must stay nil")
	}
}

func TestText(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"no url here: dial tcp 127.0.0.1:6379: connection refused", "no url here: dial tcp 127.0.0.1:6379: connection refused"},
		{"connecting to redis://:s3cret@redis:6379/0 failed", "connecting to redis://:xxxxx@redis:6379/0 failed"},
		{`Connection "amqp://guest:guest@localhost:5672/" recovery failed: EOF.`, `Connection "amqp://guest:xxxxx@localhost:5672/" recovery failed: EOF.`},
		{"two: amqp://a:p1@h1/ and amqps://b:p2@h2:5671/vh", "two: amqp://a:xxxxx@h1/ and amqps://b:xxxxx@h2:5671/vh"},
		{"list redis://a:p1@h1:1,redis://b:p2@h2:2 end", "list redis://a:xxxxx@h1:1,redis://b:xxxxx@h2:2 end"},
		{"odd amqp://u:p%zz@host/ here", "odd <unparsable url> here"},
		{"no password amqp://localhost:5672/vh", "no password amqp://localhost:5672/vh"},
	}
	for _, c := range cases {
		if got := Text(c.in); got != c.want {
			t.Errorf("Text(%q) = %q, want %q", c.in, got, c.want)
		}
		for _, secret := range []string{"s3cret", "guest@", "p1", "p2", "p%zz"} {
			if strings.Contains(Text(c.in), secret) {
				t.Errorf("Text(%q) keeps %q", c.in, secret)
			}
		}
	}
}

func TestHeader(t *testing.T) {
	for _, c := range []struct {
		name  string
		value any
		want  string
	}{
		{"Authorization", "Bearer abc.def", "(hidden: 14 bytes)"},
		{"x-api-key", []byte("k3y"), "(hidden: 3 bytes)"},
		{"X-Auth-Token", "t", "(hidden: 1 bytes)"},
		{"db_password", int32(1234), "(hidden: 4 bytes)"},
		{"Cookie", "a=b", "(hidden: 3 bytes)"},
		{"tenant", "acme", "acme"},
		{"raw", []byte("text"), "text"},
		{"callback", "see https://u:pw@example.com/cb now", "see https://u:xxxxx@example.com/cb now"},
		{"X-Private Key", "k", "(hidden: 1 bytes)"},
		{"x-access.key", "k", "(hidden: 1 bytes)"},
		{"my_JWT", "k", "(hidden: 1 bytes)"},
		{"meta", map[string]any{"tenant": "acme", "Authorization": "Bearer abc", "list": []any{int32(1), "x"}},
			"map[Authorization:(hidden: 10 bytes) list:[1 x] tenant:acme]"},
		{"hops", []any{map[string]any{"password": "pw"}}, "[map[password:(hidden: 2 bytes)]]"},
	} {
		if got := Header(c.name, c.value); got != c.want {
			t.Errorf("Header(%q, %v) = %q, want %q", c.name, c.value, got, c.want)
		}
	}
}
