package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/warrenmq/warren/internal/redact"
)

//go:embed templates/*.html static/*
var assets embed.FS

// pages are the parsed templates, one per page, each with the layout.
type pages map[string]*template.Template

var funcs = template.FuncMap{
	"scrub": redact.Text,
	"when":  when,
	"num":   num,
	"rate":  func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"short": func(s string, n int) string { return cutRunes(s, n) },
}

func loadPages() (pages, error) {
	p := pages{}
	for _, name := range []string{"overview", "groups", "messages", "message", "job", "login"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		p[name] = t
	}
	return p, nil
}

// render executes a page into a buffer first, so that a template error
// never sends half a page.
func (p pages) render(w http.ResponseWriter, name string, v view) error {
	var b bytes.Buffer
	if err := p[name].Execute(&b, v); err != nil {
		http.Error(w, "500 internal error: rendering the page failed", http.StatusInternalServerError)
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err := io.Copy(w, &b)
	return err
}

func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// num writes n with thin groups of three digits.
func num(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return s
	}
	var b []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	return string(b)
}

func cutRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
