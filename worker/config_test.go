package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// configVarSuffixes are the names of every variable FromEnv reads, without
// the "WARREN_" prefix.
var configVarSuffixes = []string{
	"AMQP_URL", "REDIS_URL", "CONCURRENCY", "PREFETCH", "RETRY_DELAYS",
	"MAX_ATTEMPTS", "HANDLER_TIMEOUT", "SHUTDOWN_TIMEOUT", "DEDUPE",
	"DEDUPE_TTL", "DEDUPE_LEASE", "DEDUPE_PREFIX", "DEDUPE_FAIL_OPEN",
	"QUEUE_TYPE", "DELIVERY_LIMIT", "LOG_LEVEL", "LOG_FORMAT", "HEALTH_ADDR",
	"METRICS_ADDR", "AMQP_CA_FILE", "AMQP_CERT_FILE", "AMQP_KEY_FILE",
	"REDIS_CA_FILE", "REDIS_CERT_FILE", "REDIS_KEY_FILE", "CONSUMER_TIMEOUT",
	"LAG_INTERVAL", "PAUSE_AFTER", "PAUSE_MIN_BACKOFF", "PAUSE_MAX_BACKOFF",
}

// configEnvKeys returns every environment variable that could reach
// FromEnv: the WARREN_ names, and the same names without the prefix.
func configEnvKeys() []string {
	keys := make([]string, 0, 2*len(configVarSuffixes))
	for _, s := range configVarSuffixes {
		keys = append(keys, worker.EnvPrefix+"_"+s, s)
	}
	return keys
}

// isolateConfigEnv unsets every variable in configEnvKeys and restores
// them when tb ends. It uses os.Setenv directly so that it works for
// fuzz targets too; callers must not run in parallel.
func isolateConfigEnv(tb testing.TB) {
	tb.Helper()
	type saved struct {
		value string
		ok    bool
	}
	old := make(map[string]saved)
	for _, k := range configEnvKeys() {
		v, ok := os.LookupEnv(k)
		old[k] = saved{v, ok}
		if err := os.Unsetenv(k); err != nil {
			tb.Fatalf("unsetenv %s: %v", k, err)
		}
	}
	tb.Cleanup(func() {
		for k, s := range old {
			if s.ok {
				os.Setenv(k, s.value)
			} else {
				os.Unsetenv(k)
			}
		}
	})
}

// setConfigEnv sets WARREN_<suffix> for the rest of the test.
func setConfigEnv(t *testing.T, suffix, value string) {
	t.Helper()
	t.Setenv(worker.EnvPrefix+"_"+suffix, value)
}

// defaultConfig is Config with every documented default filled in, as New
// returns it from Config().
func defaultConfig() worker.Config {
	return worker.Config{
		AMQPURL:         worker.DefaultAMQPURL,
		RedisURL:        worker.DefaultRedisURL,
		Concurrency:     worker.DefaultConcurrency,
		Prefetch:        0,
		RetryDelays:     retry.DefaultDelays(),
		MaxAttempts:     retry.DefaultMaxAttempts,
		HandlerTimeout:  worker.DefaultHandlerTimeout,
		ShutdownTimeout: worker.DefaultShutdownTimeout,
		Dedupe:          worker.DedupeOn,
		DedupeTTL:       worker.DefaultDedupeTTL,
		DedupeLease:     worker.DefaultDedupeLease,
		DedupePrefix:    dedupe.DefaultKeyPrefix,
		DedupeFailOpen:  false,
		QueueType:       worker.DefaultQueueType,
		DeliveryLimit:   worker.DefaultDeliveryLimit,
		PauseMinBackoff: worker.DefaultPauseMinBackoff,
		PauseMaxBackoff: worker.DefaultPauseMaxBackoff,
		LogLevel:        worker.DefaultLogLevel,
		LogFormat:       worker.DefaultLogFormat,
		ConsumerTimeout: worker.DefaultConsumerTimeout,
		LagInterval:     worker.DefaultLagInterval,
	}
}

// effective returns cfg as New fills it in.
func effective(t *testing.T, cfg worker.Config) worker.Config {
	t.Helper()
	cfg.Logger = zap.NewNop()
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	got := w.Config()
	got.Logger = nil
	return got
}

func TestFromEnvDefaults(t *testing.T) {
	isolateConfigEnv(t)
	cfg, err := worker.FromEnv()
	if err != nil {
		t.Fatalf("FromEnv with no variables: %v", err)
	}
	want := defaultConfig()
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("FromEnv() =\n%+v\nwant\n%+v", cfg, want)
	}
	if got, want := effective(t, cfg), defaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("New(FromEnv()).Config() =\n%+v\nwant\n%+v", got, want)
	}
	// "The environment defaults are the same values" as the code defaults.
	if a, b := effective(t, cfg), effective(t, worker.Config{}); !reflect.DeepEqual(a, b) {
		t.Errorf("environment defaults differ from code defaults:\nenv  %+v\ncode %+v", a, b)
	}
}

func TestFromEnvEveryVariable(t *testing.T) {
	isolateConfigEnv(t)
	certs := testenv.NewCerts(t)
	vars := map[string]string{
		"AMQP_URL":          "amqps://app:pw@mq.example.com:5671/prod",
		"REDIS_URL":         "rediss://:pw@redis.example.com:6380/2",
		"CONCURRENCY":       "3",
		"PREFETCH":          "17",
		"RETRY_DELAYS":      "250ms,2s,1h",
		"MAX_ATTEMPTS":      "9",
		"HANDLER_TIMEOUT":   "45s",
		"SHUTDOWN_TIMEOUT":  "1m30s",
		"DEDUPE":            "off",
		"DEDUPE_TTL":        "2h",
		"DEDUPE_LEASE":      "90s",
		"DEDUPE_PREFIX":     "app:dd",
		"DEDUPE_FAIL_OPEN":  "true",
		"QUEUE_TYPE":        "classic",
		"DELIVERY_LIMIT":    "7",
		"LOG_LEVEL":         "debug",
		"LOG_FORMAT":        "console",
		"HEALTH_ADDR":       ":8081",
		"METRICS_ADDR":      "127.0.0.1:9090",
		"AMQP_CA_FILE":      certs.CAFile,
		"AMQP_CERT_FILE":    certs.ClientCert,
		"AMQP_KEY_FILE":     certs.ClientKey,
		"REDIS_CA_FILE":     certs.CAFile,
		"REDIS_CERT_FILE":   certs.ClientCert,
		"REDIS_KEY_FILE":    certs.ClientKey,
		"CONSUMER_TIMEOUT":  "1h",
		"LAG_INTERVAL":      "30s",
		"PAUSE_AFTER":       "4",
		"PAUSE_MIN_BACKOFF": "2s",
		"PAUSE_MAX_BACKOFF": "30s",
	}
	if len(vars) != len(configVarSuffixes) {
		t.Fatalf("the test sets %d variables, Config has %d", len(vars), len(configVarSuffixes))
	}
	for k, v := range vars {
		setConfigEnv(t, k, v)
	}
	cfg, err := worker.FromEnv()
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	want := worker.Config{
		AMQPURL:         "amqps://app:pw@mq.example.com:5671/prod",
		RedisURL:        "rediss://:pw@redis.example.com:6380/2",
		Concurrency:     3,
		Prefetch:        17,
		RetryDelays:     []time.Duration{250 * time.Millisecond, 2 * time.Second, time.Hour},
		MaxAttempts:     9,
		HandlerTimeout:  45 * time.Second,
		ShutdownTimeout: 90 * time.Second,
		Dedupe:          worker.DedupeOff,
		DedupeTTL:       2 * time.Hour,
		DedupeLease:     90 * time.Second,
		DedupePrefix:    "app:dd",
		DedupeFailOpen:  true,
		QueueType:       broker.Classic,
		DeliveryLimit:   7,
		PauseAfter:      4,
		PauseMinBackoff: 2 * time.Second,
		PauseMaxBackoff: 30 * time.Second,
		LogLevel:        "debug",
		LogFormat:       "console",
		HealthAddr:      ":8081",
		MetricsAddr:     "127.0.0.1:9090",
		AMQPCAFile:      certs.CAFile,
		AMQPCertFile:    certs.ClientCert,
		AMQPKeyFile:     certs.ClientKey,
		RedisCAFile:     certs.CAFile,
		RedisCertFile:   certs.ClientCert,
		RedisKeyFile:    certs.ClientKey,
		ConsumerTimeout: time.Hour,
		LagInterval:     30 * time.Second,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("FromEnv() =\n%+v\nwant\n%+v", cfg, want)
	}
	// Every field is set, so New keeps them all.
	if got := effective(t, cfg); !reflect.DeepEqual(got, want) {
		t.Errorf("New(FromEnv()).Config() =\n%+v\nwant\n%+v", got, want)
	}
}

// TestFromEnvReadsOnlyPrefixedVariables: FromEnv documents that it reads
// WARREN_* variables. An unrelated REDIS_URL, LOG_LEVEL or CONCURRENCY in
// the environment (common in containers) must not change the config.
func TestFromEnvReadsOnlyPrefixedVariables(t *testing.T) {
	isolateConfigEnv(t)
	t.Setenv("AMQP_URL", "amqp://other:other@other-broker:5672/")
	t.Setenv("REDIS_URL", "redis://other-redis:6379/5")
	t.Setenv("CONCURRENCY", "3")
	t.Setenv("LOG_LEVEL", "debug")
	cfg, err := worker.FromEnv()
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	if cfg.AMQPURL != worker.DefaultAMQPURL || cfg.RedisURL != worker.DefaultRedisURL ||
		cfg.Concurrency != worker.DefaultConcurrency || cfg.LogLevel != worker.DefaultLogLevel {
		t.Errorf("unprefixed variables were read: AMQPURL=%q RedisURL=%q Concurrency=%d LogLevel=%q",
			cfg.AMQPURL, cfg.RedisURL, cfg.Concurrency, cfg.LogLevel)
	}

	t.Setenv("CONCURRENCY", "abc")
	if _, err := worker.FromEnv(); err != nil {
		t.Errorf("FromEnv fails on an unprefixed variable it should not read: %v", err)
	}
}

// TestFromEnvZeroMeansDefault: the documented "0 means the default" holds
// for variables set to zero explicitly.
func TestFromEnvZeroMeansDefault(t *testing.T) {
	cases := []struct {
		suffix, value string
		field         func(worker.Config) any
		want          any
	}{
		{"CONCURRENCY", "0", func(c worker.Config) any { return c.Concurrency }, worker.DefaultConcurrency},
		{"MAX_ATTEMPTS", "0", func(c worker.Config) any { return c.MaxAttempts }, retry.DefaultMaxAttempts},
		{"HANDLER_TIMEOUT", "0s", func(c worker.Config) any { return c.HandlerTimeout }, worker.DefaultHandlerTimeout},
		{"SHUTDOWN_TIMEOUT", "0s", func(c worker.Config) any { return c.ShutdownTimeout }, worker.DefaultShutdownTimeout},
		{"SHUTDOWN_TIMEOUT", "0", func(c worker.Config) any { return c.ShutdownTimeout }, worker.DefaultShutdownTimeout},
		{"DEDUPE_TTL", "0s", func(c worker.Config) any { return c.DedupeTTL }, worker.DefaultDedupeTTL},
		{"DEDUPE_LEASE", "0s", func(c worker.Config) any { return c.DedupeLease }, worker.DefaultDedupeLease},
		{"DELIVERY_LIMIT", "0", func(c worker.Config) any { return c.DeliveryLimit }, worker.DefaultDeliveryLimit},
		{"PREFETCH", "0", func(c worker.Config) any { return c.Prefetch }, 0},
		{"LAG_INTERVAL", "0s", func(c worker.Config) any { return c.LagInterval }, worker.DefaultLagInterval},
	}
	for _, c := range cases {
		t.Run(c.suffix+"="+c.value, func(t *testing.T) {
			isolateConfigEnv(t)
			setConfigEnv(t, c.suffix, c.value)
			cfg, err := worker.FromEnv()
			if err != nil {
				t.Fatalf("FromEnv: %v", err)
			}
			if got := c.field(effective(t, cfg)); got != c.want {
				t.Errorf("effective value = %v, want the default %v", got, c.want)
			}
		})
	}
}

// badConfigCases are invalid settings, each given as an environment value
// and, where the value parses, as the same setting in code.
var badConfigCases = []struct {
	suffix, value string
	set           func(*worker.Config) // nil: the value does not parse
}{
	{"CONCURRENCY", "-1", func(c *worker.Config) { c.Concurrency = -1 }},
	{"CONCURRENCY", "10001", func(c *worker.Config) { c.Concurrency = 10001 }},
	{"CONCURRENCY", "abc", nil},
	{"LAG_INTERVAL", "500ms", func(c *worker.Config) { c.LagInterval = 500 * time.Millisecond }},
	{"LAG_INTERVAL", "-1s", func(c *worker.Config) { c.LagInterval = -time.Second }},
	{"LAG_INTERVAL", "often", nil},
	{"PREFETCH", "70000", func(c *worker.Config) { c.Prefetch = 70000 }},
	{"PREFETCH", "-1", func(c *worker.Config) { c.Prefetch = -1 }},
	{"RETRY_DELAYS", "1x", nil},
	{"RETRY_DELAYS", "10s,1s", func(c *worker.Config) { c.RetryDelays = []time.Duration{10 * time.Second, time.Second} }},
	{"RETRY_DELAYS", "1s,1s", func(c *worker.Config) { c.RetryDelays = []time.Duration{time.Second, time.Second} }},
	{"RETRY_DELAYS", "-1s", func(c *worker.Config) { c.RetryDelays = []time.Duration{-time.Second} }},
	{"RETRY_DELAYS", "1500us", func(c *worker.Config) { c.RetryDelays = []time.Duration{1500 * time.Microsecond} }},
	{"MAX_ATTEMPTS", "-1", func(c *worker.Config) { c.MaxAttempts = -1 }},
	{"MAX_ATTEMPTS", "1000001", func(c *worker.Config) { c.MaxAttempts = 1_000_001 }},
	{"MAX_ATTEMPTS", "five", nil},
	{"HANDLER_TIMEOUT", "soon", nil},
	{"HANDLER_TIMEOUT", "-1s", func(c *worker.Config) { c.HandlerTimeout = -time.Second }},
	{"SHUTDOWN_TIMEOUT", "-1s", func(c *worker.Config) { c.ShutdownTimeout = -time.Second }},
	{"SHUTDOWN_TIMEOUT", "30", nil},
	{"DEDUPE", "maybe", func(c *worker.Config) { c.Dedupe = "maybe" }},
	{"DEDUPE_TTL", "-5m", func(c *worker.Config) { c.DedupeTTL = -5 * time.Minute }},
	{"DEDUPE_TTL", "1d", nil},
	{"DEDUPE_LEASE", "-1s", func(c *worker.Config) { c.DedupeLease = -time.Second }},
	{"DEDUPE_FAIL_OPEN", "perhaps", nil},
	{"QUEUE_TYPE", "stream", func(c *worker.Config) { c.QueueType = "stream" }},
	{"DELIVERY_LIMIT", "-1", func(c *worker.Config) { c.DeliveryLimit = -1 }},
	{"DELIVERY_LIMIT", "x", nil},
	{"PAUSE_AFTER", "-1", func(c *worker.Config) { c.PauseAfter = -1 }},
	{"PAUSE_MIN_BACKOFF", "-1s", func(c *worker.Config) { c.PauseMinBackoff = -time.Second }},
	{"PAUSE_MAX_BACKOFF", "10ms", func(c *worker.Config) { c.PauseMaxBackoff = 10 * time.Millisecond }},
	{"LOG_LEVEL", "loud", func(c *worker.Config) { c.LogLevel = "loud" }},
	{"LOG_FORMAT", "xml", func(c *worker.Config) { c.LogFormat = "xml" }},
	{"AMQP_URL", "http://x", func(c *worker.Config) { c.AMQPURL = "http://x" }},
	{"AMQP_URL", "amqp://", func(c *worker.Config) { c.AMQPURL = "amqp://" }},
	{"AMQP_URL", "amqp://guest:guest@localhost:5672/%zz", func(c *worker.Config) { c.AMQPURL = "amqp://guest:guest@localhost:5672/%zz" }},
	{"AMQP_URL", "amqp://gu%est:guest@localhost/", func(c *worker.Config) { c.AMQPURL = "amqp://gu%est:guest@localhost/" }},
	{"REDIS_URL", "mysql://x", func(c *worker.Config) { c.RedisURL = "mysql://x" }},
	{"REDIS_URL", "redis://", func(c *worker.Config) { c.RedisURL = "redis://" }},
	{"REDIS_URL", "redis://localhost/abc", func(c *worker.Config) { c.RedisURL = "redis://localhost/abc" }},
}

func TestFromEnvErrorsNameTheVariable(t *testing.T) {
	for _, c := range badConfigCases {
		name := worker.EnvPrefix + "_" + c.suffix
		t.Run(name+"="+c.value, func(t *testing.T) {
			isolateConfigEnv(t)
			t.Setenv(name, c.value)
			cfg, err := worker.FromEnv()
			if err == nil {
				t.Fatalf("FromEnv succeeded with %s=%q: %+v", name, c.value, cfg)
			}
			msg := err.Error()
			if !strings.Contains(msg, name) {
				t.Errorf("error does not name %s: %q", name, msg)
			}
			// "Errors name the variable": first, and only that one.
			if !strings.HasPrefix(msg, name+": ") {
				t.Errorf("error does not start with %q: %q", name+": ", msg)
			}
			if !reflect.DeepEqual(cfg, worker.Config{}) {
				t.Errorf("FromEnv returned a config with its error: %+v", cfg)
			}
		})
	}
}

// TestNewValidatesLikeFromEnv: a bad field set in code gives the same error
// as the same value in the environment.
func TestNewValidatesLikeFromEnv(t *testing.T) {
	for _, c := range badConfigCases {
		if c.set == nil {
			continue
		}
		name := worker.EnvPrefix + "_" + c.suffix
		t.Run(name+"="+c.value, func(t *testing.T) {
			isolateConfigEnv(t)
			t.Setenv(name, c.value)
			_, envErr := worker.FromEnv()

			var cfg worker.Config
			c.set(&cfg)
			w, err := worker.New(cfg)
			if err == nil {
				t.Fatalf("New succeeded with %s=%q: %+v", name, c.value, w.Config())
			}
			if w != nil {
				t.Errorf("New returned a worker with its error")
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("New error does not name %s: %q", name, err)
			}
			if envErr == nil || err.Error() != envErr.Error() {
				t.Errorf("New error %q differs from FromEnv error %v", err, envErr)
			}
			if vErr := cfg.Validate(); vErr == nil || vErr.Error() != err.Error() {
				t.Errorf("Validate() = %v, New error %q", vErr, err)
			}
		})
	}
}

func TestConfigNewFillsDefaults(t *testing.T) {
	w, err := worker.New(worker.Config{})
	if err != nil {
		t.Fatalf("New(Config{}): %v", err)
	}
	if w.Logger() == nil {
		t.Fatal("New(Config{}) has no logger")
	}
	if got, want := w.Config(), defaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("New(Config{}).Config() =\n%+v\nwant\n%+v", got, want)
	}
	if err := (worker.Config{}).Validate(); err != nil {
		t.Errorf("Config{}.Validate() = %v", err)
	}

	// The lease does not follow the handler timeout: claims are renewed
	// while they are held, so a short lease serves long handlers too.
	if got := effective(t, worker.Config{HandlerTimeout: time.Minute}).DedupeLease; got != worker.DefaultDedupeLease {
		t.Errorf("DedupeLease with a 1m handler timeout = %v, want %v", got, worker.DefaultDedupeLease)
	}

	// A given logger is used as it is.
	log := zap.NewNop()
	w, err = worker.New(worker.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if w.Logger() != log {
		t.Error("New replaced the given logger")
	}
}

// TestConfigRedisURLUnusedWithoutRedis: the Redis URL is documented as unused when
// dedupe is off or a Store is set, so it is not validated then.
func TestConfigRedisURLUnusedWithoutRedis(t *testing.T) {
	isolateConfigEnv(t)
	setConfigEnv(t, "REDIS_URL", "mysql://x")
	setConfigEnv(t, "DEDUPE", "off")
	if _, err := worker.FromEnv(); err != nil {
		t.Errorf("FromEnv with dedupe off and a bad Redis URL: %v", err)
	}
	if _, err := worker.New(worker.Config{RedisURL: "mysql://x", Store: dedupe.NewMemory()}); err != nil {
		t.Errorf("New with a Store and a bad Redis URL: %v", err)
	}
}

const leakedSecret = "hunter2"

func TestFromEnvNeverLeaksSecrets(t *testing.T) {
	amqpURLs := []string{
		"amqp://user:hunter2@:bad-port/",
		"amqp://user:hunter2@host:bad-port/",
		"amqp://user:hunter2@host:5672,/",
		"amqp://user:hunter2@/",
		"amqp://user:hunter2@",
		"amqp://:hunter2@",
		"http://user:hunter2@host/",
		"https://user:hunter2@host:5672/vhost",
		"amqp://user:hunter2%zz@host/",
		"amqp://user:hunter2@host/%zz",
		"amqp://user:hunter2@[::1/",
		"amqp://user:hunter2@host\n",
		" amqp://user:hunter2@host/",
		"amqp://user:hunter2@ho st/",
		// No "//": the user info ends up in the opaque part, which
		// url.URL.Redacted does not touch.
		"user:hunter2@host",
		"amqp:user:hunter2@host/",
		"amqp:/user:hunter2@host/",
		"//user:hunter2@host",
		// A comma in the user info: redact.URL splits a value on commas
		// and redacts the pieces one by one.
		"http://user:x,hunter2@host/",
		"http://x,user:hunter2@host/",
		"amqp://us,er:hunter2@/",
	}
	for _, raw := range amqpURLs {
		t.Run("AMQP_URL="+raw, func(t *testing.T) {
			isolateConfigEnv(t)
			setConfigEnv(t, "AMQP_URL", raw)
			checkNoLeak(t, "WARREN_AMQP_URL")
		})
	}

	redisURLs := []string{
		"redis://:hunter2@",
		"redis://:hunter2@host:bad",
		"redis://user:hunter2@host/abc",
		"redis://:hunter2@host/99999999999999999999",
		"redis://:hunter2%zz@host",
		"redis://user:hunter2@h1:1,h2:bad",
		"redis://user:hunter2@h1,h2/3",
		"redis://user:hunter2@h1,,h2",
		"rediss://:hunter2@host?dial_timeout=soon",
		"redis://:hunter2@host?bogus=1",
		"redis://:hunter2@host?password=hunter2&db=x",
		"redis-sentinel://:hunter2@h1,h2/",
		"redis-sentinel://:hunter2@h1/m/x/y",
		"redis-sentinel://:hunter2@h1/%zz",
		"mysql://root:hunter2@host/db",
		"redis:/:hunter2@host",
		":hunter2@host",
		"redis://:hunter2/x@host",
		"redis://:hunter2?@host",
		"redis://:hunter2@[::1",
		"redis://:hunter2@ho st",
		"REDIS://:hunter2@host/x",
	}
	for _, raw := range redisURLs {
		t.Run("REDIS_URL="+raw, func(t *testing.T) {
			isolateConfigEnv(t)
			setConfigEnv(t, "REDIS_URL", raw)
			checkNoLeak(t, "WARREN_REDIS_URL")
		})
	}
}

// checkNoLeak runs FromEnv, which must fail naming name, without the
// secret in its error.
func checkNoLeak(t *testing.T, name string) {
	t.Helper()
	_, err := worker.FromEnv()
	if err == nil {
		t.Fatalf("FromEnv accepted %s=%q", name, os.Getenv(name))
	}
	if strings.Contains(err.Error(), leakedSecret) {
		t.Errorf("error leaks the password: %q", err)
	}
	if !strings.Contains(err.Error(), name) {
		t.Errorf("error does not name %s: %q", name, err)
	}
}

// TestConfigStartLogRedactsPasswords: Run logs the effective settings, URLs
// included, before it connects. Passwords with a comma are legal in a URL
// and must not reach the log either.
func TestConfigStartLogRedactsPasswords(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	cfg := worker.Config{
		AMQPURL:  "amqp://guest:gu,est9secret@broker.invalid/",
		RedisURL: "redis://:rd,pw77secret@redis.invalid/0",
		Logger:   zap.New(core),
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := w.Handle(worker.Route{Queue: "redact-test", Handler: worker.HandlerFunc(
		func(context.Context, *worker.Delivery) error { return nil })}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err == nil {
		t.Fatal("Run with a cancelled context and no broker succeeded")
	}
	if logs.FilterMessage("starting").Len() == 0 {
		t.Fatal(`no "starting" log entry`)
	}
	for _, e := range logs.All() {
		text := fmt.Sprintf("%s %v", e.Message, e.ContextMap())
		for _, secret := range []string{"est9secret", "pw77secret"} {
			if strings.Contains(text, secret) {
				t.Errorf("log entry leaks a password: %s", text)
			}
		}
	}
}

func TestNewLogger(t *testing.T) {
	levels := []struct {
		name   string
		level  zapcore.Level
		format string
	}{
		{"debug", zapcore.DebugLevel, ""},
		{"info", zapcore.InfoLevel, ""},
		{"warn", zapcore.WarnLevel, ""},
		{"error", zapcore.ErrorLevel, ""},
		{"", zapcore.InfoLevel, ""},
	}
	for _, format := range []string{"json", "console", ""} {
		for _, l := range levels {
			t.Run(l.name+"/"+format, func(t *testing.T) {
				log, err := worker.NewLogger(l.name, format)
				if err != nil {
					t.Fatalf("NewLogger(%q, %q): %v", l.name, format, err)
				}
				if log == nil {
					t.Fatal("nil logger")
				}
				if !log.Core().Enabled(l.level) {
					t.Errorf("level %v is disabled", l.level)
				}
				if l.level > zapcore.DebugLevel && log.Core().Enabled(l.level-1) {
					t.Errorf("level %v is enabled", l.level-1)
				}
			})
		}
	}
}

func TestNewLoggerBad(t *testing.T) {
	cases := []struct{ level, format, name string }{
		{"loud", "json", "WARREN_LOG_LEVEL"},
		{"verbose", "console", "WARREN_LOG_LEVEL"},
		{"info", "xml", "WARREN_LOG_FORMAT"},
		{"info", "JSON ", "WARREN_LOG_FORMAT"},
		{"loud", "xml", "WARREN_LOG_LEVEL"},
	}
	for _, c := range cases {
		log, err := worker.NewLogger(c.level, c.format)
		if err == nil {
			t.Errorf("NewLogger(%q, %q) succeeded", c.level, c.format)
			continue
		}
		if log != nil {
			t.Errorf("NewLogger(%q, %q) returned a logger with its error", c.level, c.format)
		}
		if !strings.HasPrefix(err.Error(), c.name+": ") {
			t.Errorf("NewLogger(%q, %q) error does not start with %s: %q", c.level, c.format, c.name, err)
		}
	}
}

// TestNewLoggerFormat checks what the loggers write to standard error.
func TestNewLoggerFormat(t *testing.T) {
	t.Run("json", func(t *testing.T) {
		out := captureStderr(t, func() {
			log, err := worker.NewLogger("info", "json")
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("hidden")
			log.Info("hello", zap.Duration("took", 1500*time.Millisecond))
		})
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1 {
			t.Fatalf("want one line, got %q", out)
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
			t.Fatalf("not JSON: %q: %v", lines[0], err)
		}
		if rec["msg"] != "hello" || rec["level"] != "info" {
			t.Errorf("record = %v", rec)
		}
		ts, ok := rec["time"].(string)
		if !ok {
			t.Fatalf("no string time field: %v", rec)
		}
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("time %q is not RFC 3339: %v", ts, err)
		}
		if rec["took"] != 1500.0 {
			t.Errorf("duration field = %v, want 1500 (milliseconds)", rec["took"])
		}
	})
	t.Run("console", func(t *testing.T) {
		out := captureStderr(t, func() {
			log, err := worker.NewLogger("warn", "console")
			if err != nil {
				t.Fatal(err)
			}
			log.Info("hidden")
			log.Warn("careful")
		})
		if strings.Contains(out, "hidden") || !strings.Contains(out, "careful") || !strings.Contains(out, "WARN") {
			t.Errorf("console output = %q", out)
		}
		if json.Valid([]byte(strings.TrimSpace(out))) {
			t.Errorf("console output is JSON: %q", out)
		}
	})
}

// captureStderr returns what fn writes to os.Stderr. zap opens "stderr"
// when the logger is built, so the logger must be built inside fn.
func captureStderr(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	old := os.Stderr
	os.Stderr = w
	func() {
		defer func() { os.Stderr = old }()
		fn()
	}()
	w.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}
