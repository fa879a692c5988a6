package dedupe

import (
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Unavailable reports whether err means that the store could not be
// reached or cannot serve right now (a network error, a timeout, a server
// that is loading, read-only, failing over, out of memory or unable to
// persist, or that refuses this client's credentials or permissions), as
// opposed to a store that answered with a refusal that retrying will not
// change. The errors of a MarkDoneWith writes function, and of writes
// that failed inside its transaction, are the handler's: not the store's.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, ErrNotOwner) || errors.Is(err, ErrForeignValue) {
		return false
	}
	var (
		we *WritesError
		pe *PartialCommitError
	)
	if errors.As(err, &we) || errors.As(err, &pe) {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"LOADING", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS",
			"OOM", "MISCONF", "NOAUTH", "WRONGPASS", "NOPERM"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	return true
}
