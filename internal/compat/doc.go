// Package compat holds tests of what changed between RabbitMQ 3.10 and 4.x
// and what warren does about it: x-death left alone on republish (the
// attempt header is all that counts), the quorum queues' delivery limit,
// and copies over the broker's message size limit. It has no code of its
// own; CI runs it against both versions (see scripts/rabbitmq4.sh).
package compat
