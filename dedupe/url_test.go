package dedupe_test

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/dedupe"
)

func TestParseRedisURLGood(t *testing.T) {
	opts, err := dedupe.ParseRedisURL(" redis://worker:s3cret@cache.internal:6380/3?dial_timeout=3s&pool_size=7\n")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(opts.Addrs, []string{"cache.internal:6380"}) || opts.DB != 3 ||
		opts.Username != "worker" || opts.Password != "s3cret" || opts.TLSConfig != nil ||
		opts.DialTimeout != 3*time.Second || opts.PoolSize != 7 || !opts.ContextTimeoutEnabled {
		t.Fatalf("unexpected options: %+v", opts)
	}
}

func TestParseRedisURLDefaults(t *testing.T) {
	opts, err := dedupe.ParseRedisURL("redis://:pw@localhost")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(opts.Addrs, []string{"localhost:6379"}) || opts.Password != "pw" || opts.Username != "" {
		t.Fatalf("unexpected options: %+v", opts)
	}
}

func TestParseRedisURLTLS(t *testing.T) {
	opts, err := dedupe.ParseRedisURL("rediss://cache.example.com:6380")
	if err != nil {
		t.Fatal(err)
	}
	c := opts.TLSConfig
	if c == nil || c.ServerName != "cache.example.com" || c.MinVersion != tls.VersionTLS12 {
		t.Fatalf("TLS config = %+v", c)
	}
}

func TestParseRedisURLCluster(t *testing.T) {
	opts, err := dedupe.ParseRedisURL("redis://u:p@n1:7000,n2:7001,[::1]:7002,n4")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"n1:7000", "n2:7001", "[::1]:7002", "n4:6379"}
	if !slices.Equal(opts.Addrs, want) || opts.Password != "p" || opts.MasterName != "" {
		t.Fatalf("unexpected options: %+v", opts)
	}
}

func TestParseRedisURLClusterScheme(t *testing.T) {
	opts, err := dedupe.ParseRedisURL("redis-cluster://u:p@cluster.internal")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(opts.Addrs, []string{"cluster.internal:6379"}) || !opts.IsClusterMode || opts.TLSConfig != nil ||
		opts.Password != "p" || opts.MasterName != "" {
		t.Fatalf("unexpected options: %+v", opts)
	}
	opts, err = dedupe.ParseRedisURL("rediss-cluster://n1:7000,n2:7001?dial_timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(opts.Addrs, []string{"n1:7000", "n2:7001"}) || !opts.IsClusterMode ||
		opts.TLSConfig == nil || opts.TLSConfig.ServerName != "n1" || opts.DialTimeout != 2*time.Second {
		t.Fatalf("unexpected options: %+v", opts)
	}
	if _, err := dedupe.ParseRedisURL("redis-cluster://n1/2"); err == nil || !strings.Contains(err.Error(), "database 0") {
		t.Fatalf("a cluster URL with db 2: error %v", err)
	}
}

func TestParseRedisURLSentinel(t *testing.T) {
	opts, err := dedupe.ParseRedisURL("redis-sentinel://u:p@s1:26380,s2/my%20master/2")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(opts.Addrs, []string{"s1:26380", "s2:26379"}) || opts.MasterName != "my master" ||
		opts.DB != 2 || opts.Username != "u" || opts.Password != "p" || opts.SentinelPassword != "" {
		t.Fatalf("unexpected options: %+v", opts)
	}
}

func TestParseRedisURLBad(t *testing.T) {
	const secret = "S3cr3tPa55"
	for _, raw := range []string{
		"",
		"cache:6379",
		"user:" + secret + "@cache:6379",
		"http://user:" + secret + "@cache",
		"redis://user:" + secret + "@cache:port",
		"redis://user:" + secret + "@cache/notadb",
		"redis://user:" + secret + "@cache/1/2",
		"redis://user:" + secret + "@cache?bogus=1",
		"redis://user:" + secret + "@cache?dial_timeout=soon",
		"redis://user:S3cr3t/Pa55@cache",
		"redis://user:S3cr3t?Pa55@cache",
		"redis://user:S3cr3t#Pa55@cache",
		"redis://user:S3cr3t%zzPa55@cache",
		"redis://user:S3cr3t\"Pa55@cache",
		"redis://user:" + secret + "@ca che",
		"redis://" + secret + "@cache/x",
		"redis://user:" + secret + "@",
		"redis://user:" + secret + "@n1,,n2",
		"redis://user:" + secret + "@n1,n2/3",
		"redis://user:" + secret + "@n1:1,n2:99999",
		"redis-sentinel://user:" + secret + "@s1",
		"redis-sentinel://user:" + secret + "@s1/m/1/2",
		"redis-sentinel://user:" + secret + "@s1/m/db",
	} {
		opts, err := dedupe.ParseRedisURL(raw)
		if err == nil {
			t.Errorf("ParseRedisURL(%q) = %+v, want an error", raw, opts)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "dedupe: parse redis URL") {
			t.Errorf("ParseRedisURL(%q): error %q does not say what failed", raw, msg)
		}
		if strings.Contains(msg, "S3cr3t") || strings.Contains(msg, "Pa55") {
			t.Errorf("ParseRedisURL(%q): error %q shows the password", raw, msg)
		}
	}
}
