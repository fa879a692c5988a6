package worker

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/internal/redact"
	"github.com/warrenmq/warren/internal/tlsconf"
	"github.com/warrenmq/warren/retry"
)

// Validate checks every field of c.WithDefaults(), without touching a
// file or the network (New loads the TLS files). Each error names the
// environment variable first, then the field: "WARREN_CONCURRENCY:
// Config.Concurrency must be between 1 and 10000, got 0".
func (c Config) Validate() error {
	c = c.WithDefaults()
	checks := []func() error{
		func() error { return checkURL("AMQPURL", c.AMQPURL, "amqp", "amqps") },
		func() error { return checkRedisURL(c) },
		func() error { return checkRange("Concurrency", c.Concurrency, 1, 10000) },
		func() error { return checkRange("Prefetch", c.Prefetch, 0, 65535) },
		func() error { return checkRange("MaxAttempts", c.MaxAttempts, 1, retry.MaxAttemptValue) },
		func() error { return fieldErr("RetryDelays", retry.Policy{Delays: c.RetryDelays}.Validate()) },
		func() error { return checkPositive("HandlerTimeout", c.HandlerTimeout) },
		func() error { return checkPositive("ShutdownTimeout", c.ShutdownTimeout) },
		func() error { return checkOneOf("Dedupe", c.Dedupe, DedupeOn, DedupeOff) },
		func() error { return checkPositive("DedupeTTL", c.DedupeTTL) },
		func() error { return checkPositive("DedupeLease", c.DedupeLease) },
		func() error {
			return checkOneOf("QueueType", string(c.QueueType), string(broker.Classic), string(broker.Quorum))
		},
		func() error { return checkRange("DeliveryLimit", c.DeliveryLimit, 1, 1_000_000) },
		func() error { return checkPositive("ConsumerTimeout", c.ConsumerTimeout) },
		func() error { return checkTLSPair("AMQPCertFile", "AMQPKeyFile", c.amqpTLS()) },
		func() error { return checkTLSPair("RedisCertFile", "RedisKeyFile", c.redisTLS()) },
		func() error { return checkOneOf("LogLevel", c.LogLevel, "debug", "info", "warn", "error") },
		func() error { return checkOneOf("LogFormat", c.LogFormat, "json", "console") },
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// envOf is the environment variable of a Config field, from its tag.
func envOf(field string) string {
	f, ok := reflect.TypeFor[Config]().FieldByName(field)
	if !ok {
		panic("worker: no Config field " + field)
	}
	return f.Tag.Get("envconfig")
}

// fieldErr names field's variable and the field before err.
func fieldErr(field string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: Config.%s: %w", envOf(field), field, err)
}

// fieldErrorf is fieldErr with a message of its own: "VAR: Config.Field must ...".
func fieldErrorf(field, format string, args ...any) error {
	return fmt.Errorf("%s: Config.%s %s", envOf(field), field, fmt.Sprintf(format, args...))
}

func checkURL(field, raw string, schemes ...string) error {
	// A comma-separated list names the nodes of one broker cluster (see
	// broker.Config.URL): each address is checked, then that they agree.
	parts := broker.SplitURLs(raw)
	for i, part := range parts {
		what := redact.URL(part)
		if len(parts) > 1 {
			what = fmt.Sprintf("address %d of %d (%s)", i+1, len(parts), what)
		}
		u, err := url.Parse(part)
		if err != nil {
			return fieldErrorf(field, "%s is not a valid URL", what)
		}
		if !slices.Contains(schemes, u.Scheme) {
			return fieldErrorf(field, "scheme of %s must be one of %s", what, strings.Join(schemes, ", "))
		}
		if u.Host == "" {
			return fieldErrorf(field, "%s has no host", what)
		}
	}
	if len(parts) > 1 {
		if _, err := broker.ParseURLs(raw); err != nil {
			return fieldErr(field, err)
		}
	}
	return nil
}

func checkRedisURL(c Config) error {
	if c.Dedupe == DedupeOff || c.Store != nil {
		return nil
	}
	if _, err := dedupe.ParseRedisURL(c.RedisURL); err != nil {
		return fieldErr("RedisURL", err)
	}
	return nil
}

func checkRange(field string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fieldErrorf(field, "must be between %d and %d, got %d", lo, hi, v)
	}
	return nil
}

func checkPositive(field string, d time.Duration) error {
	if d <= 0 {
		return fieldErrorf(field, "must be a positive duration, got %s", d)
	}
	return nil
}

func checkOneOf(field, v string, allowed ...string) error {
	if !slices.Contains(allowed, v) {
		return fieldErrorf(field, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
	}
	return nil
}

// checkTLSPair checks that a client certificate comes with its key.
func checkTLSPair(certField, keyField string, f tlsconf.Files) error {
	switch {
	case f.CertFile != "" && f.KeyFile == "":
		return fieldErrorf(keyField, "is required with %s", envOf(certField))
	case f.CertFile == "" && f.KeyFile != "":
		return fieldErrorf(certField, "is required with %s", envOf(keyField))
	}
	return nil
}
