package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
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
	// DefaultMaxBackoff caps the wait between reconnection attempts. It is
	// short so that a restarted broker is found again within seconds; a
	// Conn also stops waiting as soon as another Conn of the process reaches
	// the same broker.
	DefaultMaxBackoff = 5 * time.Second
)

// Config configures a supervised connection.
type Config struct {
	// URL is the broker address, amqp:// or amqps://, or the addresses of
	// the nodes of one cluster as a comma-separated list of such URLs, e.g.
	// "amqp://u:p@h1:5672/v,amqp://u:p@h2:5672/v". Every address of a list
	// must use the same scheme, user, password, vhost and query; only host
	// and port differ. They are tried in turn: the first at Dial, the next
	// one after the address in use is lost. Required.
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
	if _, err := ParseURLs(c.URL); err != nil {
		return err
	}
	if c.Heartbeat < 0 || c.DialTimeout < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 {
		return errors.New("broker config: durations must not be negative")
	}
	if c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("broker config: max backoff %s is less than min backoff %s", c.MaxBackoff, c.MinBackoff)
	}
	return nil
}

// ParseURLs splits raw, one broker URL or a comma-separated list of them
// (see Config.URL), into its addresses, and checks each of them and that
// they agree on everything but host and port. Errors never contain a
// password.
func ParseURLs(raw string) ([]string, error) {
	if raw == "" {
		return nil, errors.New("broker url: must not be empty")
	}
	parts := SplitURLs(raw)
	var first *url.URL
	for i, p := range parts {
		u, err := parseOne(p, i, len(parts))
		if err != nil {
			return nil, err
		}
		if first == nil {
			first = u
			continue
		}
		if u.Scheme != first.Scheme || u.User.String() != first.User.String() ||
			u.Path != first.Path || u.RawQuery != first.RawQuery {
			return nil, fmt.Errorf("broker url: address %d of %d (%s) differs from address 1 (%s) in scheme, user, password, vhost or query; "+
				"the addresses of a list name the nodes of one cluster and differ only in host and port",
				i+1, len(parts), redact.URL(p), redact.URL(parts[0]))
		}
	}
	return parts, nil
}

// User is the user name the connection authenticates as with a plain
// login: the one in its URL, "guest" when the URL names none (as
// amqp091-go defaults). RabbitMQ refuses a message whose user_id
// property names another user.
func (c *Conn) User() string {
	u, err := amqp.ParseURI(c.addrs[0])
	if err != nil {
		return ""
	}
	return u.Username
}

// Vhost is the virtual host the connection opens: the one in its URL,
// "/" when the URL names none.
func (c *Conn) Vhost() string {
	u, err := amqp.ParseURI(c.addrs[0])
	if err != nil {
		return "/"
	}
	return u.Vhost
}

// nextAddress matches where the next address of a list starts: a comma
// followed by a URL scheme, another comma or the end. A comma elsewhere
// belongs to the URL (a password may hold one).
var nextAddress = regexp.MustCompile(`,([a-zA-Z][a-zA-Z0-9+.-]*://|,|$)`)

// SplitURLs splits raw into the addresses of a list (see Config.URL)
// without checking them; raw without a list is its only element.
func SplitURLs(raw string) []string {
	var parts []string
	for {
		loc := nextAddress.FindStringIndex(raw)
		if loc == nil {
			return append(parts, raw)
		}
		parts = append(parts, raw[:loc[0]])
		raw = raw[loc[0]+1:]
	}
}

func parseOne(raw string, i, n int) (*url.URL, error) {
	what := "broker url"
	if n > 1 {
		what = fmt.Sprintf("broker url: address %d of %d", i+1, n)
	}
	if raw == "" {
		return nil, fmt.Errorf("%s: is empty (a stray comma?)", what)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %s is not a valid URL", what, redact.URL(raw))
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return nil, fmt.Errorf("%s: scheme of %s must be amqp or amqps, got %q", what, redact.URL(raw), u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%s: %s has no host", what, redact.URL(raw))
	}
	return u, nil
}

// tracer is the connection's tracer, nil when tracing is off.
func (c *Conn) tracer() trace.Tracer {
	if c.cfg.TracerProvider == nil {
		return nil
	}
	return c.cfg.TracerProvider.Tracer(TracerName)
}
