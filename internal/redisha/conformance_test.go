//go:build redisha

package redisha

import (
	"testing"

	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/dedupe/dedupetest"
)

// conformance runs both dedupe suites on the set-up at url.
func conformance(t *testing.T, url string) {
	c := client(t, url)
	store := func(t *testing.T) *dedupe.RedisStore {
		// Conformance and batch cases write keys under KeyPrefix(t).
		deletePrefix(t, c, dedupetest.KeyPrefix(t))
		s, err := dedupe.NewRedis(c, dedupe.RedisConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("Store", func(t *testing.T) {
		dedupetest.Run(t, func(t *testing.T) (dedupe.Store, dedupetest.Clock) {
			return store(t), dedupetest.SleepClock{}
		})
	})
	t.Run("Batch", func(t *testing.T) {
		dedupetest.RunBatch(t, func(t *testing.T) dedupe.BatchStore { return store(t) })
	})
}

func TestSentinelConformance(t *testing.T) { conformance(t, sentinelURL(t)) }
func TestClusterConformance(t *testing.T)  { conformance(t, clusterURL(t)) }
