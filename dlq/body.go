package dlq

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Body formats.
const (
	AsText = "text"
	AsJSON = "json"
	AsHex  = "hex"
)

// DefaultBodyBytes bounds a shown body, in bytes.
const DefaultBodyBytes = 64 << 10

// ShownBody is a message body prepared for people.
type ShownBody struct {
	Format string // what Text is: AsText, AsJSON or AsHex
	Text   string
	Size   int  // the whole body's size in bytes
	Cut    bool // Text shows only the first max bytes
	Note   string
}

// ShowBody renders at most max bytes of body as text, indented JSON or a
// hex dump. An empty format picks JSON for valid JSON, text for UTF-8,
// hex otherwise; a format that does not fit the body falls back with a
// note.
func ShowBody(body []byte, format string, max int) ShownBody {
	if max <= 0 {
		max = DefaultBodyBytes
	}
	s := ShownBody{Size: len(body)}
	part := body
	if len(part) > max {
		part, s.Cut = part[:max], true
	}
	if format == "" {
		format = AsText
		if json.Valid(body) {
			format = AsJSON
		}
	}
	switch {
	case format == AsJSON && !s.Cut && json.Valid(body):
		if indentedOver(body, 2*max) {
			s.Format, s.Text, s.Note = AsText, string(part), "shown as text: indented it would exceed the size bound"
			break
		}
		var b bytes.Buffer
		_ = json.Indent(&b, body, "", "  ")
		s.Format, s.Text = AsJSON, b.String()
	case format == AsJSON:
		s.Note = "not shown as JSON: the body is not valid JSON or exceeds the size bound"
		s = textOrHex(s, part)
	case format == AsHex:
		s.Format, s.Text = AsHex, hex.Dump(part)
	default:
		s = textOrHex(s, part)
	}
	if s.Cut {
		s.Note = joinNote(s.Note, fmt.Sprintf("first %d of %d bytes", len(part), len(body)))
	}
	return s
}

func textOrHex(s ShownBody, part []byte) ShownBody {
	// A cut may split a rune at the end; that alone is no reason for hex.
	trimmed := part
	for i := 0; i < utf8.UTFMax && len(trimmed) > 0 && !utf8.Valid(trimmed); i++ {
		trimmed = trimmed[:len(trimmed)-1]
	}
	if utf8.Valid(trimmed) && (len(trimmed) > 0 || len(part) == 0) {
		s.Format, s.Text = AsText, string(trimmed)
		return s
	}
	s.Format, s.Text = AsHex, hex.Dump(part)
	s.Note = joinNote(s.Note, "shown as hex: the body is not UTF-8 text")
	return s
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// indentedOver reports whether valid JSON body, indented by two spaces a
// level, could exceed limit bytes, without indenting it: deep nesting
// makes the indented size grow with the square of the depth (a 20 KB
// body of nested arrays indents to more than a gigabyte). It counts a
// line break and the indentation after each bracket and comma outside
// strings, an upper bound of what json.Indent writes.
func indentedOver(body []byte, limit int) bool {
	n, depth := len(body), 0
	inString, escaped := false, false
	for _, c := range body {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		case c == '"':
			inString = true
			continue
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		case c == ':':
			n++ // the space after it
			continue
		case c != ',':
			continue
		}
		if n += 1 + 2*max(depth, 0); n > limit {
			return true
		}
	}
	return false
}
