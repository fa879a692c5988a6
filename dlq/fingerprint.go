package dlq

import (
	"regexp"
	"strings"
)

// MaxFingerprint bounds a fingerprint, in bytes.
const MaxFingerprint = 200

// The variable parts of error texts, replaced in this order: the earlier
// ones contain digits that the later, wider ones would otherwise take
// apart.
var variable = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`), "<uuid>"},
	{regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s"'<>]+`), "<url>"},
	{regexp.MustCompile(`[\w.+\-]+@[\w\-]+(\.[\w\-]+)+`), "<email>"},
	{regexp.MustCompile(`\[[0-9a-fA-F:.]*:[0-9a-fA-F:.%\w]*\](:\d+)?`), "<addr>"},
	{regexp.MustCompile(`\b([0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}\b`), "<addr>"},
	{regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b`), "<addr>"},
	{regexp.MustCompile(`\b[a-zA-Z][a-zA-Z0-9\-]*(\.[a-zA-Z0-9\-]+)*:\d{2,5}\b`), "<addr>"},
	{regexp.MustCompile(`\b0[xX][0-9a-fA-F]+\b`), "<hex>"},
}

var (
	// digitWord is a word with a digit in it: a number or an id.
	digitWord = regexp.MustCompile(`[\w\-]*\d[\w\-]*`)
	number    = regexp.MustCompile(`^-?\d+([.,]\d+)*([a-zA-Zµ%]{1,3})?$`)
	hexWord   = regexp.MustCompile(`^[0-9a-fA-F]{8,}$`)
	spaces    = regexp.MustCompile(`\s+`)
)

// Fingerprint normalises an error text so that errors of one cause
// compare equal: UUIDs, URLs, e-mail addresses, network addresses, hex,
// numbers (with a short unit, as in 5s or 20ms) and ids (words with a
// digit in them) are replaced by placeholders such as <n> and <id>,
// whitespace is collapsed, and the result is cut to MaxFingerprint bytes.
func Fingerprint(errText string) string {
	s := errText
	for _, v := range variable {
		s = v.re.ReplaceAllString(s, v.with)
	}
	s = digitWord.ReplaceAllStringFunc(s, func(w string) string {
		switch {
		case number.MatchString(w):
			return "<n>"
		case hexWord.MatchString(w):
			return "<hex>"
		default:
			return "<id>"
		}
	})
	s = strings.TrimSpace(spaces.ReplaceAllString(s, " "))
	return cutString(s, MaxFingerprint)
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
