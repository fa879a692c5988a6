package dedupe_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/dedupe/dedupetest"
)

// newMemory returns a memory store on a manual clock.
func newMemory(t *testing.T) (*dedupe.MemoryStore, *dedupetest.ManualClock) {
	t.Helper()
	clock := dedupetest.NewManualClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := dedupe.NewMemory()
	s.SetClock(clock.Now)
	return s, clock
}

func TestMemoryConformance(t *testing.T) {
	dedupetest.Run(t, func(t *testing.T) (dedupe.Store, dedupetest.Clock) {
		return newMemory(t)
	})
}

func TestMemoryBatchConformance(t *testing.T) {
	dedupetest.RunBatch(t, func(t *testing.T) dedupe.BatchStore {
		s, _ := newMemory(t)
		return s
	})
}

func TestMemorySweepsExpiredEntries(t *testing.T) {
	s, clock := newMemory(t)
	ctx := t.Context()
	for i := range 100 {
		if _, err := s.Claim(ctx, fmt.Sprint("gone-", i), "a", time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Second)
	for range 2000 {
		if st, err := s.Claim(ctx, "kept", "a", time.Hour); err != nil || st != dedupe.Claimed {
			t.Fatalf("Claim = %s, %v", st, err)
		}
	}
	if n := s.Len(); n != 1 {
		t.Fatalf("Len() = %d after sweeps, want 1", n)
	}
}

func TestMemoryWallClock(t *testing.T) {
	s, _ := newMemory(t)
	s.SetClock(nil)
	ctx := t.Context()
	if st, err := s.Claim(ctx, "k", "a", time.Millisecond); err != nil || st != dedupe.Claimed {
		t.Fatalf("Claim = %s, %v", st, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := s.Claim(ctx, "k", "b", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if st == dedupe.Claimed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease on the wall clock never expired: %s", st)
		}
		time.Sleep(time.Millisecond)
	}
}
