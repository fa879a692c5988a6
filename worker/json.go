package worker

import (
	"context"
	"encoding/json"
)

// JSON adapts a function that takes a decoded value to Handler. A body
// that does not decode into T is a permanent failure: the message is
// dead-lettered at once with the decode error.
func JSON[T any](fn func(ctx context.Context, d *Delivery, v T) error) Handler {
	return HandlerFunc(func(ctx context.Context, d *Delivery) error {
		var v T
		if err := json.Unmarshal(d.Body, &v); err != nil {
			return Permanent(&DecodeError{Err: err})
		}
		return fn(ctx, d, v)
	})
}
