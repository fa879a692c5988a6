package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

const sessionCookie = "warren_console"

// sessionTTL is how long a token login lasts. The server checks it: a
// session cookie names the time it was issued, and is refused after.
const sessionTTL = 12 * time.Hour

// guard checks who a request comes from and that its POSTs are genuine.
type guard struct {
	auth   Auth
	secret []byte // for CSRF tokens; new at every start
	log    *zap.Logger
	origin *http.CrossOriginProtection
}

func newGuard(a Auth, log *zap.Logger) *guard {
	g := &guard{auth: a, secret: make([]byte, 32), log: log, origin: http.NewCrossOriginProtection()}
	_, _ = rand.Read(g.secret)
	return g
}

// session is the session cookie's value for a login at issued: the time
// and a MAC of it keyed with the token, never the token. It stays valid
// across restarts of the console, for sessionTTL, and no longer once the
// token changes.
func (g *guard) session(issued time.Time) string {
	at := strconv.FormatInt(issued.Unix(), 10)
	return at + "." + mac([]byte(g.auth.Token), "warren-console-session\x00"+at)
}

// validSession reports whether v is a session cookie of this token, issued
// within sessionTTL before now (and not in the future, but for a minute
// of clock skew).
func (g *guard) validSession(v string, now time.Time) bool {
	at, _, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	sec, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return false
	}
	issued := time.Unix(sec, 0)
	if issued.After(now.Add(time.Minute)) || now.Sub(issued) > sessionTTL {
		return false
	}
	return same(v, g.session(issued))
}

func mac(key []byte, msg string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return hex.EncodeToString(h.Sum(nil))
}

func same(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// who returns the user of r, or "" when r is not authenticated.
func (g *guard) who(r *http.Request) string {
	if g.auth.User != "" {
		if u, p, ok := r.BasicAuth(); ok && same(u, g.auth.User) && same(p, g.auth.Password) {
			return u
		}
	}
	if g.auth.Token != "" {
		if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && same(b, g.auth.Token) {
			return "token"
		}
		if c, err := r.Cookie(sessionCookie); err == nil && g.validSession(c.Value, time.Now()) {
			return "token"
		}
	}
	if g.auth.Token == "" && g.auth.User == "" && g.auth.Insecure {
		return "anonymous"
	}
	return ""
}

// csrf is the token every form of who carries.
func (g *guard) csrf(who string) string { return mac(g.secret, "csrf\x00"+who) }

// wrap lets through authenticated requests, and POSTs only from the same
// origin with the right CSRF token.
func (g *guard) wrap(next func(w http.ResponseWriter, r *http.Request, who string)) http.Handler {
	return g.origin.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := g.who(r)
		if who == "" {
			g.deny(w, r)
			return
		}
		if r.Header.Get("Sec-Fetch-Site") == "cross-site" && (r.Header.Get("Sec-Fetch-Mode") != "navigate" || r.Header.Get("Sec-Fetch-Dest") != "document") {
			// A page of another site fetching ours in the background (or
			// in a frame, or with HEAD, which runs the GET handler) with
			// the browser's basic-auth credentials: each page read may
			// read a DLQ. Following a link from elsewhere passes.
			g.log.Warn("console: cross-site request refused", zap.String("who", who), zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
			http.Error(w, "403 forbidden: a cross-site request that is not a navigation", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodPost && !same(r.PostFormValue("csrf"), g.csrf(who)) {
			g.log.Warn("console: POST refused: CSRF token missing or wrong", zap.String("who", who), zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
			http.Error(w, "403 forbidden: the form's CSRF token is missing or wrong (reload the page and try again)", http.StatusForbidden)
			return
		}
		next(w, r, who)
	}))
}

func (g *guard) deny(w http.ResponseWriter, r *http.Request) {
	if g.auth.User != "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="warren console", charset="UTF-8"`)
	}
	if g.auth.Token != "" && r.Method == http.MethodGet && g.auth.User == "" {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	http.Error(w, "401 unauthorized: the console needs a token or a user and password", http.StatusUnauthorized)
}

// login checks a token typed into the login form and sets the session
// cookie (see session).
func (g *guard) login(w http.ResponseWriter, r *http.Request) bool {
	if g.auth.Token == "" || !same(r.PostFormValue("token"), g.auth.Token) {
		g.log.Warn("console: login refused", zap.String("remote", r.RemoteAddr))
		return false
	}
	now := time.Now()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: g.session(now), Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, Expires: now.Add(sessionTTL)})
	g.log.Info("console: login", zap.String("who", "token"), zap.String("remote", r.RemoteAddr))
	return true
}
