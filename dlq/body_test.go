package dlq_test

import (
	"runtime"
	"strings"
	"testing"

	"github.com/warrenmq/warren/dlq"
)

// A JSON body is shown indented unless indenting could exceed twice the
// size bound; the bound is checked before indenting, so deep nesting (a
// 20 KB body indents to gigabytes) costs nothing.
func TestShowBodyIndentBound(t *testing.T) {
	s := dlq.ShowBody([]byte(`{"a":[1,2,{"b":"x,y[z]\"{"}]}`), "", 0)
	if s.Format != dlq.AsJSON || !strings.Contains(s.Text, "\n    2,\n") || !strings.Contains(s.Text, `"x,y[z]\"{"`) {
		t.Fatalf("small JSON: %+v", s)
	}
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s = dlq.ShowBody([]byte(deep), "", 0)
	runtime.ReadMemStats(&after)
	if s.Format != dlq.AsText || s.Text != deep || !strings.Contains(s.Note, "indented it would exceed") {
		t.Fatalf("deep JSON: format %s, note %q", s.Format, s.Note)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 10<<20 {
		t.Fatalf("showing 20 KB of deep JSON allocated %d MiB; it must not be indented", n>>20)
	}
}
