package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/worker"
)

// fuzzOrder is a typical message body type for a JSON handler.
type fuzzOrder struct {
	ID       string            `json:"id"`
	Amount   int64             `json:"amount"`
	Price    float64           `json:"price"`
	Paid     bool              `json:"paid"`
	Items    []fuzzItem        `json:"items"`
	Labels   map[string]string `json:"labels"`
	Customer *struct {
		Name  string `json:"name"`
		Email string `json:"email"`
	} `json:"customer"`
	At    time.Time       `json:"at"`
	Extra json.RawMessage `json:"extra"`
	Any   any             `json:"any"`
	Code  uint8           `json:"code"`
}

type fuzzItem struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

// FuzzJSONHandler feeds arbitrary message bodies to a JSON handler. It
// must never panic; it either calls the function with what json.Unmarshal
// decodes, or fails with a permanent decode error without calling it.
func FuzzJSONHandler(f *testing.F) {
	f.Add([]byte(`{"id":"o-1","amount":3,"items":[{"sku":"a","qty":2}],"at":"2024-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte(`{"code":256}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Add([]byte("{\"id\":\"\xff\"}"))
	f.Add([]byte(`{"at":"yesterday"}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		called := false
		var got fuzzOrder
		h := worker.JSON(func(_ context.Context, d *worker.Delivery, v fuzzOrder) error {
			called = true
			got = v
			return nil
		})
		d := &worker.Delivery{Message: broker.Message{Body: body}, Queue: "q", Attempt: 1, MaxAttempts: 1}
		err := h.Handle(context.Background(), d)

		var want fuzzOrder
		wantErr := json.Unmarshal(body, &want)
		if err == nil {
			if !called {
				t.Fatalf("body %q: no error, but the function was not called", body)
			}
			if wantErr != nil {
				t.Fatalf("body %q: handled, but json.Unmarshal fails: %v", body, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("body %q: decoded %+v, want %+v", body, got, want)
			}
		} else {
			if called {
				t.Fatalf("body %q: function called, then error %v (it returns nil)", body, err)
			}
			var pe *worker.PermanentError
			if !errors.As(err, &pe) {
				t.Fatalf("body %q: error %v (%T) is not permanent", body, err, err)
			}
			var de *worker.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("body %q: error %v is not a DecodeError", body, err)
			}
			if wantErr == nil {
				t.Fatalf("body %q: rejected with %v, but json.Unmarshal accepts it", body, err)
			}
			_ = err.Error() // must not panic
		}
	})
}

// fuzzSecret is the password put in fuzzed URLs. It has no byte that a URL
// parser or the redaction marker "xxxxx" treats specially.
const fuzzSecret = "Hunter2Pw9Q"

// FuzzConfigEnv feeds arbitrary values of a few WARREN_ variables to
// FromEnv. It must never panic; its errors must name a WARREN_ variable and
// never contain a URL password; a config it returns must be accepted by New.
func FuzzConfigEnv(f *testing.F) {
	isolateConfigEnv(f)
	// user, amqpTail, redisTail, delays, concurrency, timeout, level
	f.Add("guest", "127.0.0.1:5672/", "127.0.0.1:6379/0", "1s,10s", "8", "30s", "info")
	f.Add("u", ":bad-port/", "", "1x", "-1", "soon", "loud")
	f.Add("", "[::1/", "h1:1,h2:bad", "10s,1s", "abc", "-1s", "")
	f.Add("u", "host/%zz", "host/abc", "", "0", "0s", "debug")
	f.Add("u", "host?x=1#y", "host?dial_timeout=soon", "1ms,2ms,3ms", "10000", "1h", "error")
	f.Fuzz(func(t *testing.T, user, amqpTail, redisTail, delays, concurrency, timeout, level string) {
		// The fuzzed user name must keep the secret inside the user info
		// of the URL, so that it is a password.
		if strings.ContainsAny(user, "/?#@") {
			return
		}
		amqpURL := "amqp://" + user + ":" + fuzzSecret + "@" + amqpTail
		redisURL := "redis://u:" + fuzzSecret + "@" + redisTail

		// The AMQP URL alone.
		if !fuzzSetenv(t, map[string]string{"WARREN_AMQP_URL": amqpURL}) {
			return
		}
		_, err := worker.FromEnv()
		checkFuzzErr(t, err, amqpURL, user+amqpTail)

		// The Redis URL alone; the AMQP URL is the default.
		if !fuzzSetenv(t, map[string]string{"WARREN_REDIS_URL": redisURL}) {
			return
		}
		_, err = worker.FromEnv()
		checkFuzzErr(t, err, redisURL, redisTail)

		// The other variables with good URLs.
		if !fuzzSetenv(t, map[string]string{
			"WARREN_RETRY_DELAYS":    delays,
			"WARREN_CONCURRENCY":     concurrency,
			"WARREN_HANDLER_TIMEOUT": timeout,
			"WARREN_LOG_LEVEL":       level,
		}) {
			return
		}
		cfg, err := worker.FromEnv()
		checkFuzzErr(t, err, "", "")
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("FromEnv returned a config that Validate rejects: %v", verr)
			}
			cfg.Logger = zap.NewNop()
			if _, err := worker.New(cfg); err != nil {
				t.Fatalf("FromEnv returned a config that New rejects: %v", err)
			}
		}
	})
}

// fuzzSetenv unsets every config variable, then sets vars. It reports
// false if a value cannot be put in the environment (a NUL byte).
func fuzzSetenv(t *testing.T, vars map[string]string) bool {
	for _, k := range configEnvKeys() {
		os.Unsetenv(k)
	}
	for k, v := range vars {
		if strings.IndexByte(v, 0) >= 0 {
			return false
		}
		if err := os.Setenv(k, v); err != nil {
			t.Fatalf("setenv %s=%q: %v", k, v, err)
		}
	}
	t.Cleanup(func() {
		for k := range vars {
			os.Unsetenv(k)
		}
	})
	return true
}

// checkFuzzErr checks an error of FromEnv: it names a variable first, and
// it has no password unless the fuzzed part of the URL has it too.
func checkFuzzErr(t *testing.T, err error, rawURL, fuzzed string) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, worker.EnvPrefix+"_") {
		t.Fatalf("error does not start with a variable name: %q", msg)
	}
	if rawURL == "" || containsSecret(fuzzed) {
		return
	}
	if strings.Contains(msg, fuzzSecret) {
		t.Fatalf("URL %q: error leaks the password: %q", rawURL, msg)
	}
}

// containsSecret reports whether s has the secret, as it is or unescaped.
func containsSecret(s string) bool {
	if strings.Contains(s, fuzzSecret) {
		return true
	}
	if u, err := url.PathUnescape(s); err == nil && strings.Contains(u, fuzzSecret) {
		return true
	}
	if u, err := url.QueryUnescape(s); err == nil && strings.Contains(u, fuzzSecret) {
		return true
	}
	return false
}
