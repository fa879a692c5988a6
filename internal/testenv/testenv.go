// Package testenv gives tests the addresses of the local RabbitMQ and Redis,
// unique names so tests can run in parallel, and fault injection.
package testenv

import (
	"crypto/rand"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// AMQPURL is the test broker: WARREN_TEST_AMQP_URL or the local default.
func AMQPURL() string {
	if u := os.Getenv("WARREN_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// RedisAddr is the test Redis: WARREN_TEST_REDIS_ADDR or the local default.
func RedisAddr() string {
	if a := os.Getenv("WARREN_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// RedisURL is RedisAddr as a redis:// URL.
func RedisURL() string { return "redis://" + RedisAddr() + "/0" }

var unsafe = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// Name returns a name unique to this test run, built from the test's name.
func Name(t testing.TB) string {
	base := strings.ToLower(unsafe.ReplaceAllString(t.Name(), "-"))
	if len(base) > 60 {
		base = base[len(base)-60:]
	}
	return fmt.Sprintf("t-%s-%s", strings.Trim(base, "-"), strings.ToLower(rand.Text()[:8]))
}
