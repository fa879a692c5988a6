// Package redact removes secrets from values before they reach logs or errors.
package redact

import (
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strings"
)

// URL returns raw with any password replaced by "xxxxx". A value that
// does not parse as a URL with a host is not echoed, since a secret may
// hide anywhere in it. A comma-separated list of URLs is redacted item by
// item, but only when every item is a URL of its own.
func URL(raw string) string {
	if raw == "" {
		return ""
	}
	if parts, ok := splitURLs(raw); ok {
		for i, p := range parts {
			parts[i] = single(p)
		}
		return strings.Join(parts, ",")
	}
	return single(raw)
}

func splitURLs(raw string) ([]string, bool) {
	if !strings.Contains(raw, ",") {
		return nil, false
	}
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
		u, err := url.Parse(parts[i])
		if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" {
			return nil, false
		}
	}
	return parts, true
}

func single(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable url>"
	}
	hidden := u.Opaque != "" || u.Host == "" ||
		(u.User == nil && strings.Contains(raw, "@")) ||
		strings.Contains(u.Path+u.RawQuery+u.Fragment, "@")
	if hidden {
		if u.Scheme != "" {
			return u.Scheme + "://<redacted>"
		}
		return "<redacted url>"
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

// urlInText matches a URL with a scheme inside free text: up to the next
// space, quote or angle bracket.
var urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+`)

// Text returns s with every URL in it redacted as URL does, for lines a
// library wrote, which may quote an address with its password.
func Text(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlInText.ReplaceAllStringFunc(s, URL)
}

// secretNames are parts of header names whose values are credentials,
// matched in lower case with '-', '_', '.' and spaces removed.
var secretNames = []string{"auth", "cookie", "token", "secret", "passw", "pwd", "apikey", "accesskey",
	"privatekey", "signature", "credential", "session", "jwt", "bearer"}

// secretName reports whether a header named name holds a credential.
func secretName(name string) bool {
	n := strings.NewReplacer("-", "", "_", "", ".", "", " ", "").Replace(strings.ToLower(name))
	for _, s := range secretNames {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// Header returns a message header's value for people: hidden, with its
// size, when the header's name says it holds a credential (an
// authorization, a token, a password...), else its text with every URL's
// password redacted. In a table or a list the same holds for each entry.
func Header(name string, value any) string {
	if secretName(name) {
		n := len(fmt.Sprint(value))
		if b, ok := value.([]byte); ok {
			n = len(b)
		}
		return fmt.Sprintf("(hidden: %d bytes)", n)
	}
	if b, ok := value.([]byte); ok {
		return Text(string(b))
	}
	v := reflect.ValueOf(value)
	switch {
	case v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String:
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + ":" + Header(k, v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key())).Interface())
		}
		return "map[" + strings.Join(parts, " ") + "]"
	case v.Kind() == reflect.Slice || v.Kind() == reflect.Array:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = Header(name, v.Index(i).Interface())
		}
		return "[" + strings.Join(parts, " ") + "]"
	}
	return Text(fmt.Sprint(value))
}
