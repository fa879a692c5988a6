// Package redact removes secrets from values before they reach logs or errors.
package redact

import (
	"net/url"
	"strings"
)

// URL returns raw with any password replaced by "xxxxx". A value that does
// not parse as a URL is not echoed at all, since it may be a secret itself.
// A comma-separated list of URLs is redacted item by item.
func URL(raw string) string {
	if raw == "" {
		return ""
	}
	if strings.Contains(raw, ",") {
		parts := strings.Split(raw, ",")
		for i, p := range parts {
			parts[i] = URL(strings.TrimSpace(p))
		}
		return strings.Join(parts, ",")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable url>"
	}
	return u.Redacted()
}

// Error returns err with the password of every URL in urls removed from its
// text. The result still unwraps to err, so errors.Is and errors.As work.
func Error(err error, urls ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := msg
	for _, raw := range urls {
		if pw := password(raw); pw != "" {
			clean = strings.ReplaceAll(clean, pw, "xxxxx")
		}
		if raw != "" {
			clean = strings.ReplaceAll(clean, raw, URL(raw))
		}
	}
	if clean == msg {
		return err
	}
	return &scrubbed{msg: clean, err: err}
}

func password(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return ""
	}
	pw, _ := u.User.Password()
	return pw
}

type scrubbed struct {
	msg string
	err error
}

func (s *scrubbed) Error() string { return s.msg }
func (s *scrubbed) Unwrap() error { return s.err }
