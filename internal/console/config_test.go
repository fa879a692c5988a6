package console

import (
	"strings"
	"testing"
)

// TestAuthFromEnv: every refusal names the variable to set.
func TestAuthFromEnv(t *testing.T) {
	cases := []struct {
		token, user, password string
		insecure              bool
		want                  string // "" for no error
	}{
		{want: "WARREN_CONSOLE_TOKEN, or WARREN_CONSOLE_USER and WARREN_CONSOLE_PASSWORD, or pass -insecure-no-auth"},
		{insecure: true},
		{token: "x7Qz9", want: "WARREN_CONSOLE_TOKEN: too short"},
		{token: "0123456789abcdef"},
		{user: "ops", want: "WARREN_CONSOLE_PASSWORD: not set"},
		{password: "pw", want: "WARREN_CONSOLE_USER: not set"},
		{user: "ops", password: "pw"},
	}
	for _, c := range cases {
		t.Setenv("WARREN_CONSOLE_TOKEN", c.token)
		t.Setenv("WARREN_CONSOLE_USER", c.user)
		t.Setenv("WARREN_CONSOLE_PASSWORD", c.password)
		_, err := AuthFromEnv(c.insecure)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: %v, want an error with %q", c, err, c.want)
		}
		if err != nil && c.token != "" && strings.Contains(err.Error(), c.token) {
			t.Errorf("the error shows the token: %v", err)
		}
	}
}

func TestNum(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 100000: "100,000", 1234567: "1,234,567"} {
		if got := num(n); got != want {
			t.Errorf("num(%d) = %q, want %q", n, got, want)
		}
	}
}
