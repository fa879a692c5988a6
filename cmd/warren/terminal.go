package main

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// forTerminal returns s with what a terminal would act on written as an
// escape: control characters other than newline and tab (ESC, CR,
// backspace, DEL, the C1 controls) and the bidirectional formatting
// characters that reorder how a line reads. Message ids, headers and
// bodies come from producers: printed raw, an escape sequence in one
// could rewrite the screen, the window title or the clipboard, or hide
// part of what is shown. Bytes that are not UTF-8 become U+FFFD: some
// terminals read lone bytes 0x80 to 0x9f as C1 controls.
func forTerminal(s string) string {
	if strings.IndexFunc(s, actsOnTerminal) < 0 && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for _, r := range s {
		if !actsOnTerminal(r) {
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRuneToASCII(r) // '\x1b', '\u202e'
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}

func actsOnTerminal(r rune) bool {
	switch {
	case r == '\n' || r == '\t':
		return false
	case unicode.IsControl(r):
		return true
	case r == unicode.ReplacementChar:
		return false
	}
	return unicode.Is(unicode.Bidi_Control, r)
}
