package testenv

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// HashPlugin is the RabbitMQ plugin that ordered routes need.
const HashPlugin = "rabbitmq_consistent_hash_exchange"

// ConsistentHashURL is the AMQP URL of a broker with the consistent-hash
// exchange plugin: the test broker when it has the plugin enabled
// (scripts/services.sh enables it), otherwise a private node started for
// the test (about 30s; skipped with -short).
func ConsistentHashURL(t testing.TB) string {
	t.Helper()
	ok, err := HasConsistentHash(AMQPURL())
	if err != nil {
		t.Fatalf("checking the test broker for %s: %v", HashPlugin, err)
	}
	if ok {
		return AMQPURL()
	}
	if testing.Short() {
		t.Skipf("the test broker lacks %s and a private node takes about 30s", HashPlugin)
	}
	t.Logf("the test broker lacks %s: starting a private node", HashPlugin)
	return StartPrivateRabbit(t, HashPlugin).URL()
}

// HasConsistentHash tells whether the broker at url knows the exchange
// kind x-consistent-hash: it declares an auto-delete exchange of that
// kind under a random name and deletes it again. A broker without the
// plugin refuses the kind (503 command invalid).
func HasConsistentHash(url string) (bool, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return false, err
	}
	name := "warren-probe-hash-" + strings.ToLower(rand.Text()[:8])
	err = ch.ExchangeDeclare(name, "x-consistent-hash", false, true, false, false, nil)
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.CommandInvalid {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, ch.ExchangeDelete(name, false, false)
}
