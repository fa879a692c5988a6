package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/internal/redact"
)

// Defaults for Config.
const (
	DefaultConnectionName = "warren"
	DefaultHeartbeat      = 10 * time.Second
	DefaultDialTimeout    = 10 * time.Second
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
)

// Config configures a supervised connection.
type Config struct {
	// URL is the broker address, amqp:// or amqps://. Required.
	URL string
	// Name is shown in the broker's connection list. "" means DefaultConnectionName.
	Name string
	// TLS is used for amqps:// URLs. nil means the system roots and the
	// URL's host name.
	TLS *tls.Config
	// Heartbeat is the AMQP heartbeat interval. 0 means DefaultHeartbeat.
	Heartbeat time.Duration
	// DialTimeout bounds one connection attempt, TCP and handshake.
	// 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// MinBackoff is the first wait between reconnection attempts; it
	// doubles up to MaxBackoff, with full jitter. 0 means DefaultMinBackoff.
	MinBackoff time.Duration
	// MaxBackoff caps the wait between reconnection attempts.
	// 0 means DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Logger receives lifecycle events. nil means no logging.
	Logger *zap.Logger
	// TracerProvider makes the publisher's producer spans. nil means
	// tracing is off: no span is made and nothing is injected.
	TracerProvider trace.TracerProvider
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Name == "" {
		c.Name = DefaultConnectionName
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// Validate reports the first invalid field. Errors never contain the
// password of the URL.
func (c Config) Validate() error {
	if c.URL == "" {
		return errors.New("broker url: must not be empty")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("broker url %s: not a valid URL", redact.URL(c.URL))
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return fmt.Errorf("broker url %s: scheme must be amqp or amqps, got %q", redact.URL(c.URL), u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("broker url %s: missing host", redact.URL(c.URL))
	}
	if c.Heartbeat < 0 || c.DialTimeout < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 {
		return errors.New("broker config: durations must not be negative")
	}
	if c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("broker config: max backoff %s is less than min backoff %s", c.MaxBackoff, c.MinBackoff)
	}
	return nil
}

// tracer is the connection's tracer, nil when tracing is off.
func (c *Conn) tracer() trace.Tracer {
	if c.cfg.TracerProvider == nil {
		return nil
	}
	return c.cfg.TracerProvider.Tracer(TracerName)
}
