package dedupe

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Default ports of addresses in a Redis URL that have none.
const (
	DefaultRedisPort    = "6379"
	DefaultSentinelPort = "26379"
)

// redactedSecret replaces credentials in error messages.
const redactedSecret = "xxxxx"

// ParseRedisURL turns a Redis URL into client options for
// redis.NewUniversalClient. Accepted forms:
//
//	redis://[user:pass@]host[:port][/db][?option=value...]
//	rediss://[user:pass@]host[:port][/db][?option=value...]
//	redis://[user:pass@]host1:port,host2:port[?option=value...]
//	redis-cluster://[user:pass@]host[:port][,host2:port...][?option=value...]
//	rediss-cluster://[user:pass@]host[:port][,host2:port...][?option=value...]
//	redis-sentinel://[user:pass@]host1:port,host2:port/mastername[/db][?option=value...]
//
// One host gives a single-server client; rediss uses TLS 1.2 or later
// with the host as server name. A comma list of hosts gives a Cluster
// client (db must be 0); with rediss every node is verified against the
// first host's name. redis-cluster (rediss-cluster with TLS) gives a
// Cluster client however many hosts it names: for a cluster reached
// through one address (a DNS name or a load balancer in front of its
// nodes), the client learns the other nodes from the one it reaches.
// redis-sentinel gives a Sentinel client: the hosts are sentinels
// (default port 26379), the path names the master, and user and password
// authenticate to the master and replicas only; set SentinelUsername and
// SentinelPassword on the result if the sentinels need them. Ports
// default to 6379 otherwise.
//
// Options in the query are those of a single-server URL (for example
// dial_timeout=3s or pool_size=20). ContextTimeoutEnabled is set, so that
// RedisConfig.OpTimeout bounds socket reads and writes too.
//
// Errors never contain the password: the URL is shown with its
// credentials replaced.
func ParseRedisURL(raw string) (*redis.UniversalOptions, error) {
	p, err := splitRedisURL(strings.TrimSpace(raw))
	if err != nil {
		return nil, err
	}
	opts, err := p.options()
	if err != nil {
		return nil, p.errorf("%s", describe(err))
	}
	opts.ContextTimeoutEnabled = true
	if opts.TLSConfig != nil && opts.TLSConfig.MinVersion < tls.VersionTLS12 {
		opts.TLSConfig.MinVersion = tls.VersionTLS12
	}
	return opts, nil
}

// redisURL is a Redis URL split into raw parts.
type redisURL struct {
	scheme   string   // lower case
	userinfo string   // raw, without "@"; "" if there is none
	hasUser  bool     // the URL has an "@" before the hosts
	hosts    []string // raw host[:port] items
	path     string   // raw, from the first "/" after the hosts
	query    string   // raw, without "?"
}

// splitRedisURL splits raw into its parts the way net/url would, except
// that the host may be a comma list.
func splitRedisURL(raw string) (redisURL, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || scheme == "" {
		return redisURL{}, errors.New("dedupe: parse redis URL: missing scheme (want redis://, rediss://, redis-cluster://, rediss-cluster:// or redis-sentinel://)")
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 && strings.Contains(rest[i:], "@") {
		return redisURL{}, errors.New(`dedupe: parse redis URL: "@" after the host; percent-encode "/", "?" and "#" in the user name and password`)
	}
	p := redisURL{scheme: strings.ToLower(scheme)}
	rest, _, _ = strings.Cut(rest, "#")
	rest, p.query, _ = strings.Cut(rest, "?")
	authority := rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, p.path = rest[:i], rest[i:]
	}
	hosts := authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		p.userinfo, p.hasUser, hosts = authority[:i], true, authority[i+1:]
	}
	p.hosts = strings.Split(hosts, ",")
	return p, p.check()
}

// check reports an unknown scheme or an empty host.
func (p redisURL) check() error {
	switch p.scheme {
	case "redis", "rediss", "redis-cluster", "rediss-cluster", "redis-sentinel":
	default:
		return p.errorf("unsupported scheme %q (want redis, rediss, redis-cluster, rediss-cluster or redis-sentinel)", p.scheme)
	}
	for _, h := range p.hosts {
		if h == "" {
			return p.errorf("empty host")
		}
	}
	return nil
}

// options builds the client options of p.
func (p redisURL) options() (*redis.UniversalOptions, error) {
	if p.scheme == "redis-sentinel" {
		return p.sentinelOptions()
	}
	scheme, cluster := strings.CutSuffix(p.scheme, "-cluster")
	o, err := redis.ParseURL(p.single(scheme, p.path))
	if err != nil {
		return nil, err
	}
	opts := universalOptions(o)
	if len(p.hosts) == 1 && !cluster {
		return opts, nil
	}
	opts.IsClusterMode = true
	if opts.DB != 0 {
		return nil, errors.New("a cluster has only database 0")
	}
	opts.Addrs, err = normalizeAddrs(p.hosts, DefaultRedisPort)
	return opts, err
}

// sentinelOptions builds the options of a redis-sentinel URL.
func (p redisURL) sentinelOptions() (*redis.UniversalOptions, error) {
	segs := strings.FieldsFunc(p.path, func(r rune) bool { return r == '/' })
	if len(segs) == 0 || len(segs) > 2 {
		return nil, errors.New("path must be /mastername or /mastername/db")
	}
	master, err := url.PathUnescape(segs[0])
	if err != nil || master == "" {
		return nil, errors.New("invalid master name")
	}
	dbPath := ""
	if len(segs) == 2 {
		dbPath = "/" + segs[1]
	}
	o, err := redis.ParseURL(p.single("redis", dbPath))
	if err != nil {
		return nil, err
	}
	opts := universalOptions(o)
	opts.MasterName = master
	opts.Addrs, err = normalizeAddrs(p.hosts, DefaultSentinelPort)
	return opts, err
}

// single rebuilds p as a one-host URL with the given scheme and path.
func (p redisURL) single(scheme, path string) string {
	var b strings.Builder
	b.WriteString(scheme + "://")
	if p.hasUser {
		b.WriteString(p.userinfo + "@")
	}
	b.WriteString(p.hosts[0] + path)
	if p.query != "" {
		b.WriteString("?" + p.query)
	}
	return b.String()
}

// redacted returns p without credentials or query, for error messages.
func (p redisURL) redacted() string {
	user := ""
	if p.hasUser {
		name, _, hasPass := strings.Cut(p.userinfo, ":")
		if hasPass {
			user = name + ":" + redactedSecret + "@"
		} else {
			user = redactedSecret + "@"
		}
	}
	return p.scheme + "://" + user + strings.Join(p.hosts, ",") + p.path
}

// scrub removes the credentials of p from msg.
func (p redisURL) scrub(msg string) string {
	if !p.hasUser {
		return msg
	}
	secrets := []string{p.userinfo}
	if _, pass, ok := strings.Cut(p.userinfo, ":"); ok {
		secrets = append(secrets, pass)
		if dec, err := url.PathUnescape(pass); err == nil {
			secrets = append(secrets, dec)
		}
	} else if dec, err := url.PathUnescape(p.userinfo); err == nil {
		secrets = append(secrets, dec)
	}
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, redactedSecret)
		}
	}
	return msg
}

// errorf returns a parse error that names the redacted URL.
func (p redisURL) errorf(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return fmt.Errorf("dedupe: parse redis URL %q: %s", p.redacted(), p.scrub(msg))
}

// describe returns the message of an error from go-redis's URL parser,
// without the URL that a *url.Error repeats and without the bytes of a
// bad escape, which may be part of a password.
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		var ee url.EscapeError
		if errors.As(ue.Err, &ee) {
			return "malformed URL: invalid percent-encoding"
		}
		return "malformed URL: " + ue.Err.Error()
	}
	return strings.TrimPrefix(err.Error(), "redis: ")
}

// normalizeAddrs checks each host[:port] and adds defaultPort where the
// port is missing.
func normalizeAddrs(hosts []string, defaultPort string) ([]string, error) {
	addrs := make([]string, 0, len(hosts))
	for _, h := range hosts {
		a, err := normalizeAddr(h, defaultPort)
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// normalizeAddr checks one host[:port] and adds defaultPort if the port
// is missing. IPv6 hosts are written in brackets.
func normalizeAddr(h, defaultPort string) (string, error) {
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), defaultPort
		if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
			return "", fmt.Errorf("invalid host %q", h)
		}
	}
	if host == "" || strings.ContainsAny(host, "/@[] ") {
		return "", fmt.Errorf("invalid host %q", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("invalid port in %q", h)
	}
	return net.JoinHostPort(host, port), nil
}

// universalOptions copies the fields a single-server URL can set.
func universalOptions(o *redis.Options) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:                   []string{o.Addr},
		ClientName:              o.ClientName,
		DB:                      o.DB,
		Protocol:                o.Protocol,
		Username:                o.Username,
		Password:                o.Password,
		MaxRetries:              o.MaxRetries,
		MinRetryBackoff:         o.MinRetryBackoff,
		MaxRetryBackoff:         o.MaxRetryBackoff,
		DialTimeout:             o.DialTimeout,
		DialerRetries:           o.DialerRetries,
		DialerRetryTimeout:      o.DialerRetryTimeout,
		ReadTimeout:             o.ReadTimeout,
		WriteTimeout:            o.WriteTimeout,
		PoolFIFO:                o.PoolFIFO,
		PoolSize:                o.PoolSize,
		MaxConcurrentDials:      o.MaxConcurrentDials,
		PoolTimeout:             o.PoolTimeout,
		MinIdleConns:            o.MinIdleConns,
		MaxIdleConns:            o.MaxIdleConns,
		MaxActiveConns:          o.MaxActiveConns,
		ConnMaxIdleTime:         o.ConnMaxIdleTime,
		ConnMaxLifetime:         o.ConnMaxLifetime,
		ConnMaxLifetimeJitter:   o.ConnMaxLifetimeJitter,
		PipelinePoolSize:        o.PipelinePoolSize,
		PipelineReadBufferSize:  o.PipelineReadBufferSize,
		PipelineWriteBufferSize: o.PipelineWriteBufferSize,
		TLSConfig:               o.TLSConfig,
	}
}
