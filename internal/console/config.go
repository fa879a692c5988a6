package console

import (
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dlq"
)

// Defaults.
const (
	DefaultAddr         = "127.0.0.1:8025"
	DefaultGroupsPage   = 50
	DefaultMessagesPage = 100
	MinTokenLength      = 16
)

// Config is a console's set-up.
type Config struct {
	// Conn is the broker connection; required.
	Conn *broker.Conn
	// Management, when set, is used for queue counts and rates, and to
	// resolve route prefixes. nil means passive declares.
	Management *dlq.Management
	// Routes are queue names, or prefixes ending in "*"; required.
	Routes []string
	// Delays are the retry tiers shown without the management API.
	Delays []time.Duration
	// ReadOnly refuses every state change (replay, purge).
	ReadOnly bool
	// Auth says who may use the console; required.
	Auth Auth
	// Logger receives one line per action; nil means none.
	Logger *zap.Logger
	// GroupsPage and MessagesPage are page sizes; 0 means the defaults.
	GroupsPage, MessagesPage int
}

// Auth is how the console checks its users: a token, a user and password
// (basic auth), or both. Insecure allows anyone and must be asked for.
type Auth struct {
	Token          string
	User, Password string
	Insecure       bool
}

// AuthFromEnv reads WARREN_CONSOLE_TOKEN, WARREN_CONSOLE_USER and
// WARREN_CONSOLE_PASSWORD.
func AuthFromEnv(insecure bool) (Auth, error) {
	a := Auth{Token: os.Getenv("WARREN_CONSOLE_TOKEN"), User: os.Getenv("WARREN_CONSOLE_USER"),
		Password: os.Getenv("WARREN_CONSOLE_PASSWORD"), Insecure: insecure}
	return a, a.validate()
}

func (a Auth) validate() error {
	switch {
	case a.Token != "" && len(a.Token) < MinTokenLength:
		return fmt.Errorf("WARREN_CONSOLE_TOKEN: too short (%d characters); use at least %d, e.g. from `openssl rand -hex 16`", len(a.Token), MinTokenLength)
	case a.User != "" && a.Password == "":
		return errors.New("WARREN_CONSOLE_PASSWORD: not set, but WARREN_CONSOLE_USER is")
	case a.User == "" && a.Password != "":
		return errors.New("WARREN_CONSOLE_USER: not set, but WARREN_CONSOLE_PASSWORD is")
	case a.Token == "" && a.User == "" && !a.Insecure:
		return errors.New("console: no access control: set WARREN_CONSOLE_TOKEN, or WARREN_CONSOLE_USER and WARREN_CONSOLE_PASSWORD, or pass -insecure-no-auth")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.GroupsPage <= 0 {
		c.GroupsPage = DefaultGroupsPage
	}
	if c.MessagesPage <= 0 {
		c.MessagesPage = DefaultMessagesPage
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Conn == nil:
		return errors.New("console: Config.Conn is required")
	case len(c.Routes) == 0:
		return errors.New("console: name at least one route (a queue, or a prefix ending in *)")
	}
	return c.Auth.validate()
}
