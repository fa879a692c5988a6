package dedupe

import (
	"errors"
	"slices"
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
	return unavailable(err, storeDown)
}

// Refusals of the server that say it cannot serve now.
var (
	// notServing: whatever the command.
	notServing = []string{"LOADING", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS",
		"OOM", "MISCONF", "MOVED", "ASK"}
	// storeDown: of the store's own commands, which also cannot run
	// when the server refuses this client's credentials or permissions.
	storeDown = append(slices.Clone(notServing), "NOAUTH", "WRONGPASS", "NOPERM")
)

// unavailable is Unavailable with the refusals that count as prefixes.
func unavailable(err error, prefixes []string) bool {
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
		for _, p := range prefixes {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	return true
}
