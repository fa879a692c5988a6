package worker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/internal/redact"
	"github.com/warrenmq/warren/internal/tlsconf"
	"github.com/warrenmq/warren/retry"
)

// Defaults for Config. The environment defaults are the same values.
const (
	DefaultAMQPURL         = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultRedisURL        = "redis://127.0.0.1:6379/0"
	DefaultConcurrency     = 8
	DefaultHandlerTimeout  = 30 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultDedupeTTL       = 24 * time.Hour
	// DefaultDedupeLease is how long a claim holds without being
	// renewed. A running worker renews its claims every third of it, so a
	// live handler's claim never lapses however long it runs, and a
	// killed worker's claims are free for another worker within it.
	DefaultDedupeLease     = 3 * time.Second
	DefaultQueueType       = broker.Quorum
	DefaultDeliveryLimit   = 20
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "json"
	DefaultConsumerTimeout = 30 * time.Minute
	DefaultMaxAttempts     = retry.DefaultMaxAttempts
	DefaultDedupePrefix    = dedupe.DefaultKeyPrefix
	DefaultDedupe          = DedupeOn
	// EnvPrefix prefixes every environment variable: WARREN_AMQP_URL, ...
	EnvPrefix = "WARREN"
)

// Dedupe modes.
const (
	DedupeOn  = "on"
	DedupeOff = "off"
)

// Config configures a Worker. Build it in code, or read it from the
// environment with FromEnv; New fills zero fields with the defaults.
type Config struct {
	// AMQPURL is the broker, amqp:// or amqps://. "" means DefaultAMQPURL.
	AMQPURL string `envconfig:"WARREN_AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/"`
	// RedisURL is the dedupe store: redis:// or rediss://. "" means
	// DefaultRedisURL. Unused when Dedupe is off or Store is set.
	RedisURL string `envconfig:"WARREN_REDIS_URL" default:"redis://127.0.0.1:6379/0"`

	// Concurrency is how many handlers run at once per route.
	// 0 means DefaultConcurrency.
	Concurrency int `envconfig:"WARREN_CONCURRENCY" default:"8"`
	// Prefetch is how many unacked messages the broker sends ahead per
	// route. 0 means twice the route's concurrency.
	Prefetch int `envconfig:"WARREN_PREFETCH" default:"0"`

	// RetryDelays are the delay tiers of broker-side retries, ascending.
	// nil means retry.DefaultDelays (1s,10s,1m,10m).
	RetryDelays Delays `envconfig:"WARREN_RETRY_DELAYS" default:"1s,10s,1m,10m"`
	// MaxAttempts is the number of handler runs, the first included,
	// before a message is dead-lettered. 0 means retry.DefaultMaxAttempts.
	MaxAttempts int `envconfig:"WARREN_MAX_ATTEMPTS" default:"5"`
	// HandlerTimeout bounds one handler run. 0 means DefaultHandlerTimeout.
	HandlerTimeout time.Duration `envconfig:"WARREN_HANDLER_TIMEOUT" default:"30s"`
	// ShutdownTimeout bounds the drain after Run's context ends; then
	// handler contexts are cancelled. 0 means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration `envconfig:"WARREN_SHUTDOWN_TIMEOUT" default:"30s"`

	// Dedupe is "on" or "off". "" means on.
	Dedupe string `envconfig:"WARREN_DEDUPE" default:"on"`
	// DedupeTTL is how long a done mark is kept. 0 means DefaultDedupeTTL.
	DedupeTTL time.Duration `envconfig:"WARREN_DEDUPE_TTL" default:"24h"`
	// DedupeLease is how long a claim holds without being renewed. A
	// worker renews its claims every third of it while it holds them, so
	// a live handler keeps its claim however long it runs, and a killed
	// worker's claims are free within it. 0 means DefaultDedupeLease (3s).
	DedupeLease time.Duration `envconfig:"WARREN_DEDUPE_LEASE" default:"3s"`
	// DedupePrefix starts every dedupe key. "" means dedupe.DefaultKeyPrefix.
	DedupePrefix string `envconfig:"WARREN_DEDUPE_PREFIX" default:"warren"`
	// DedupeFailOpen processes messages without a claim while the store
	// is unreachable. false (the default) means fail closed: messages wait
	// on the broker until the store is back.
	DedupeFailOpen bool `envconfig:"WARREN_DEDUPE_FAIL_OPEN" default:"false"`

	// QueueType is classic or quorum for the queues warren declares.
	// "" means DefaultQueueType (quorum).
	QueueType broker.QueueType `envconfig:"WARREN_QUEUE_TYPE" default:"quorum"`
	// DeliveryLimit is the x-delivery-limit of quorum queues: after this
	// many deliveries without a result (crashes, requeues) the broker
	// dead-letters the message. 0 means DefaultDeliveryLimit.
	DeliveryLimit int `envconfig:"WARREN_DELIVERY_LIMIT" default:"20"`

	// AMQPCAFile, AMQPCertFile and AMQPKeyFile configure TLS for amqps://
	// URLs: extra trusted roots and a client certificate. "" means the
	// system roots and no client certificate.
	AMQPCAFile   string `envconfig:"WARREN_AMQP_CA_FILE"`
	AMQPCertFile string `envconfig:"WARREN_AMQP_CERT_FILE"`
	AMQPKeyFile  string `envconfig:"WARREN_AMQP_KEY_FILE"`
	// RedisCAFile, RedisCertFile and RedisKeyFile do the same for
	// rediss:// URLs.
	RedisCAFile   string `envconfig:"WARREN_REDIS_CA_FILE"`
	RedisCertFile string `envconfig:"WARREN_REDIS_CERT_FILE"`
	RedisKeyFile  string `envconfig:"WARREN_REDIS_KEY_FILE"`
	// ConsumerTimeout is the broker's consumer_timeout (30 minutes unless
	// its operator changed it): a delivery unacked for longer makes the
	// broker close the channel. A handler timeout near it is warned about
	// at start. 0 means 30m.
	ConsumerTimeout time.Duration `envconfig:"WARREN_CONSUMER_TIMEOUT" default:"30m"`

	// LogLevel is debug, info, warn or error. "" means info.
	LogLevel string `envconfig:"WARREN_LOG_LEVEL" default:"info"`
	// LogFormat is json or console. "" means json.
	LogFormat string `envconfig:"WARREN_LOG_FORMAT" default:"json"`
	// HealthAddr serves /livez and /readyz. "" means no health server.
	HealthAddr string `envconfig:"WARREN_HEALTH_ADDR" default:""`
	// MetricsAddr serves Prometheus /metrics. "" means no metrics server.
	MetricsAddr string `envconfig:"WARREN_METRICS_ADDR" default:""`

	// Logger receives all logs. nil means a logger built from LogLevel
	// and LogFormat.
	Logger *zap.Logger `ignored:"true"`
	// Store replaces the Redis dedupe store, for tests and custom stores.
	Store dedupe.Store `ignored:"true"`
	// Registry receives the worker's metrics. nil means a registry of the
	// worker's own, served on MetricsAddr and returned by Worker.Registry.
	Registry *prometheus.Registry `ignored:"true"`
}

// FromEnv reads the configuration from WARREN_* environment variables,
// applying the defaults for unset ones, and validates it. Errors name the
// variable.
func FromEnv() (Config, error) {
	var c Config
	// The tags carry the full names and no prefix is given, so that
	// envconfig never falls back to an unprefixed variable.
	if err := envconfig.Process("", &c); err != nil {
		return Config{}, envError(err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// envError turns envconfig's error into one that names the variable first.
func envError(err error) error {
	var pe *envconfig.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: cannot parse %q as %s: %w", pe.KeyName, redactValue(pe.KeyName, pe.Value), pe.TypeName, pe.Err)
	}
	return fmt.Errorf("reading the environment: %w", err)
}

// redactValue hides URL passwords in values echoed back in errors.
func redactValue(key, v string) string {
	if strings.HasSuffix(key, "URL") {
		return redact.URL(v)
	}
	return v
}

// Delays is a list of retry delays. From the environment it reads
// "1s,10s,1m" (spaces allowed around items).
type Delays []time.Duration

// Decode implements envconfig.Decoder.
func (d *Delays) Decode(s string) error {
	if strings.TrimSpace(s) == "" {
		*d = nil
		return nil
	}
	var out Delays
	for _, item := range strings.Split(s, ",") {
		v, err := time.ParseDuration(strings.TrimSpace(item))
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	*d = out // Validate checks the order and the units
	return nil
}

// WithDefaults returns c with every zero field set to its default (the
// Default* constants; RetryDelays to retry.DefaultDelays). New applies it
// once; Validate checks what it returns.
func (c Config) WithDefaults() Config {
	if c.AMQPURL == "" {
		c.AMQPURL = DefaultAMQPURL
	}
	if c.RedisURL == "" {
		c.RedisURL = DefaultRedisURL
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if len(c.RetryDelays) == 0 {
		c.RetryDelays = retry.DefaultDelays()
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = DefaultHandlerTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Dedupe == "" {
		c.Dedupe = DefaultDedupe
	}
	if c.DedupeTTL == 0 {
		c.DedupeTTL = DefaultDedupeTTL
	}
	if c.DedupeLease == 0 {
		c.DedupeLease = DefaultDedupeLease
	}
	if c.DedupePrefix == "" {
		c.DedupePrefix = DefaultDedupePrefix
	}
	if c.QueueType == "" {
		c.QueueType = DefaultQueueType
	}
	if c.DeliveryLimit == 0 {
		c.DeliveryLimit = DefaultDeliveryLimit
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.ConsumerTimeout == 0 {
		c.ConsumerTimeout = DefaultConsumerTimeout
	}
	if c.LogFormat == "" {
		c.LogFormat = DefaultLogFormat
	}
	return c
}

func (c Config) amqpTLS() tlsconf.Files {
	return tlsconf.Files{CAFile: c.AMQPCAFile, CertFile: c.AMQPCertFile, KeyFile: c.AMQPKeyFile}
}

func (c Config) redisTLS() tlsconf.Files {
	return tlsconf.Files{CAFile: c.RedisCAFile, CertFile: c.RedisCertFile, KeyFile: c.RedisKeyFile}
}

// loadTLS reads the TLS files of both connections (nil where none is
// named). Errors name the variables.
func (c Config) loadTLS() (amqpTLS, redisTLS *tls.Config, err error) {
	if amqpTLS, err = c.amqpTLS().Load(); err != nil {
		return nil, nil, fmt.Errorf("%s_AMQP_CA_FILE/CERT_FILE/KEY_FILE: %w", EnvPrefix, err)
	}
	if redisTLS, err = c.redisTLS().Load(); err != nil {
		return nil, nil, fmt.Errorf("%s_REDIS_CA_FILE/CERT_FILE/KEY_FILE: %w", EnvPrefix, err)
	}
	return amqpTLS, redisTLS, nil
}

// logFields are the effective settings, secrets redacted, logged once at
// start.
func (c Config) logFields() []zap.Field {
	return []zap.Field{
		zap.String("amqp_url", redact.URL(c.AMQPURL)),
		zap.String("redis_url", redact.URL(c.RedisURL)),
		zap.Int("concurrency", c.Concurrency),
		zap.Int("prefetch", c.Prefetch),
		zap.Durations("retry_delays", c.RetryDelays),
		zap.Int("max_attempts", c.MaxAttempts),
		zap.Duration("handler_timeout", c.HandlerTimeout),
		zap.Duration("shutdown_timeout", c.ShutdownTimeout),
		zap.String("dedupe", c.Dedupe),
		zap.Duration("dedupe_ttl", c.DedupeTTL),
		zap.Duration("dedupe_lease", c.DedupeLease),
		zap.Bool("dedupe_fail_open", c.DedupeFailOpen),
		zap.String("queue_type", string(c.QueueType)),
		zap.Int("delivery_limit", c.DeliveryLimit),
		zap.Bool("amqp_client_cert", c.AMQPCertFile != ""),
		zap.Bool("redis_client_cert", c.RedisCertFile != ""),
		zap.Duration("consumer_timeout", c.ConsumerTimeout),
		zap.String("health_addr", c.HealthAddr),
		zap.String("metrics_addr", c.MetricsAddr),
	}
}
