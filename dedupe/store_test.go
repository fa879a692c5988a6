package dedupe_test

import (
	"testing"

	"github.com/warrenmq/warren/dedupe"
)

func TestStatusString(t *testing.T) {
	for s, want := range map[dedupe.Status]string{
		dedupe.Claimed:    "claimed",
		dedupe.Done:       "done",
		dedupe.InProgress: "in_progress",
		0:                 "Status(0)",
		42:                "Status(42)",
	} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}
