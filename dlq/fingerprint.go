package dlq

import (
	"regexp"
	"strings"
)

// MaxFingerprint bounds a fingerprint, in bytes.
const MaxFingerprint = 200

// The variable parts of error texts, replaced in this order: the earlier
// ones contain digits that the later, wider ones would otherwise take
// apart. Each runs only when the text holds its hint, which keeps
// fingerprinting cheap for the usual short error.
var variable = []struct {
	hint string
	re   *regexp.Regexp
	with string
}{
	{"-", regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`), "<uuid>"},
	{"://", regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s"'<>]+`), "<url>"},
	{"@", regexp.MustCompile(`[\w.+\-]+@[\w\-]+(\.[\w\-]+)+`), "<email>"},
	{"[", regexp.MustCompile(`\[[0-9a-fA-F:.]*:[0-9a-fA-F:.%\w]*\](:\d+)?`), "<addr>"},
	{":", regexp.MustCompile(`\b([0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}\b`), "<addr>"},
	{".", regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b`), "<addr>"},
	{":", regexp.MustCompile(`\b[a-zA-Z][a-zA-Z0-9\-]*(\.[a-zA-Z0-9\-]+)*:\d{2,5}\b`), "<addr>"},
	{"0", regexp.MustCompile(`\b0[xX][0-9a-fA-F]+\b`), "<hex>"},
}

// Fingerprint normalises an error text so that errors of one cause
// compare equal: UUIDs, URLs, e-mail addresses, network addresses, hex,
// numbers (with a short unit, as in 5s or 20ms) and ids (words with a
// digit in them) are replaced by placeholders such as <n> and <id>,
// whitespace is collapsed, and the result is cut to MaxFingerprint bytes.
func Fingerprint(errText string) string {
	s := strings.ToValidUTF8(errText, "\uFFFD")
	for _, v := range variable {
		if strings.Contains(s, v.hint) {
			s = v.re.ReplaceAllString(s, v.with)
		}
	}
	return cutString(words(s), MaxFingerprint)
}

// words replaces each word with a digit in it (letters, digits, _ and -)
// by <n> (a number, with a short unit), <hex> (8 or more hex digits) or
// <id>, and collapses whitespace.
func words(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for i := 0; i < len(s); {
		c := s[i]
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			space = true
			i++
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		if !wordByte(c) {
			b.WriteByte(c)
			i++
			continue
		}
		j := i
		for j < len(s) && wordByte(s[j]) {
			j++
		}
		b.WriteString(classify(s[i:j]))
		i = j
	}
	return b.String()
}

func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// classify returns w, or its placeholder when it holds a digit.
func classify(w string) string {
	if !strings.ContainsAny(w, "0123456789") {
		return w
	}
	if isNumber(w) {
		return "<n>"
	}
	if len(w) >= 8 && strings.Trim(w, "0123456789abcdefABCDEF") == "" {
		return "<hex>"
	}
	return "<id>"
}

// isNumber: an optional minus, digits, then at most three letters (a
// unit, as in 5s, 20ms, 3kb).
func isNumber(w string) bool {
	w = strings.TrimPrefix(w, "-")
	d := 0
	for d < len(w) && w[d] >= '0' && w[d] <= '9' {
		d++
	}
	if d == 0 || len(w)-d > 3 {
		return false
	}
	for _, c := range []byte(w[d:]) {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// cutString shortens s to at most n bytes on a rune boundary, marking the
// cut with "…".
func cutString(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	end := n - len("…")
	for end > 0 && (s[end]&0xC0) == 0x80 {
		end--
	}
	return s[:end] + "…"
}

// fingerprints caches the fingerprints of recent error texts: a DLQ
// usually holds many copies of few errors. It is bounded.
type fingerprints map[string]string

const maxCachedFingerprints = 4096

func (c fingerprints) of(errText string) string {
	if fp, ok := c[errText]; ok {
		return fp
	}
	if len(c) >= maxCachedFingerprints {
		clear(c)
	}
	fp := Fingerprint(errText)
	if len(errText) <= 1024 {
		c[errText] = fp
	}
	return fp
}
