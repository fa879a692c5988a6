package dedupe

import (
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Unavailable reports whether err means that the store could not be
// reached or cannot serve right now (a network error, a timeout, a server
// that is loading, read-only or failing over), as opposed to a store that
// answered with a refusal that retrying will not change.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, ErrNotOwner) || errors.Is(err, ErrForeignValue) {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"LOADING", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	return true
}
