package clustertest

import (
	"strings"
	"testing"

	"github.com/warrenmq/warren/worker"
)

// TestWorkerConfigAddressList: WARREN_AMQP_URL takes the nodes of a
// cluster as a comma list; a list whose addresses disagree, or with a bad
// address, is refused with an error that names the variable and the
// address, without the password.
func TestWorkerConfigAddressList(t *testing.T) {
	t.Setenv("WARREN_DEDUPE", "off")
	t.Setenv("WARREN_AMQP_URL", "amqp://app:s3cret@mq1:5672/prod,amqp://app:s3cret@mq2:5672/prod,amqp://app:s3cret@mq3:5672/prod")
	if _, err := worker.FromEnv(); err != nil {
		t.Fatalf("a list of three addresses: %v", err)
	}
	bad := map[string]string{
		"amqp://app:s3cret@mq1/prod,amqp://app:s3cret@mq2/test":  "address 2 of 2",
		"amqp://app:s3cret@mq1/prod,amqp://bob:s3cret@mq2/prod":  "address 2 of 2",
		"amqp://app:s3cret@mq1/prod,http://app:s3cret@mq2/prod":  "address 2 of 2",
		"amqp://app:s3cret@mq1/prod,,amqp://app:s3cret@mq2/prod": "address 2 of 3",
		"amqp://app:s3cret@mq1/prod,amqp:///prod":                "has no host",
	}
	for raw, want := range bad {
		t.Setenv("WARREN_AMQP_URL", raw)
		_, err := worker.FromEnv()
		if err == nil {
			t.Errorf("%q accepted", raw)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, "WARREN_AMQP_URL") || !strings.Contains(msg, want) {
			t.Errorf("%q: error %q, want it to name WARREN_AMQP_URL and say %q", raw, msg, want)
		}
		if strings.Contains(msg, "s3cret") {
			t.Errorf("%q: error shows the password: %q", raw, msg)
		}
	}
}
