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
