package broker

import (
	"errors"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestSizeLimitOf(t *testing.T) {
	for _, tc := range []struct {
		err         *amqp.Error
		size, limit int64
		ok          bool
	}{
		{&amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - message size 16777217 is larger than configured max size 16777216"}, 16777217, 16777216, true},
		{&amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - unknown delivery tag 3"}, 0, 0, false},
		{&amqp.Error{Code: amqp.NotFound, Reason: "message size 2 is larger than configured max size 1"}, 0, 0, false},
		{nil, 0, 0, false},
	} {
		size, limit, ok := sizeLimitOf(tc.err)
		if size != tc.size || limit != tc.limit || ok != tc.ok {
			t.Errorf("sizeLimitOf(%v) = %d, %d, %v; want %d, %d, %v", tc.err, size, limit, ok, tc.size, tc.limit, tc.ok)
		}
	}
}

// TestSizeLimitForgottenWithItsConnection: a learnt limit refuses larger
// bodies on its connection only.
func TestSizeLimitForgottenWithItsConnection(t *testing.T) {
	var l sizeLimit
	if err := l.check(1<<30, "a", "", "q"); err != nil {
		t.Fatalf("nothing learnt yet, got %v", err)
	}
	gen := make(chan struct{})
	reason := &amqp.Error{Code: amqp.PreconditionFailed, Reason: "message size 11 is larger than configured max size 10"}
	l.learn(10, reason, gen)
	if err := l.check(10, "a", "", "q"); err != nil {
		t.Errorf("a body at the limit: %v", err)
	}
	err := l.check(11, "b", "ex", "key")
	var tl *MessageTooLargeError
	var ce *ChannelError
	if !errors.As(err, &tl) || tl.Size != 11 || tl.Limit != 10 || tl.MessageID != "b" || !errors.As(err, &ce) || ce.Err != reason {
		t.Errorf("a body over the limit: got %v", err)
	}
	close(gen)
	if err := l.check(11, "c", "", "q"); err != nil {
		t.Errorf("after the connection ended: %v", err)
	}
}
