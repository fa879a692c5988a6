package worker_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/worker"
)

// TestTLSWithClientCertificates runs a worker over amqps:// and rediss://
// with a CA file and a client certificate, through TLS proxies that
// demand the certificate, and processes a message with dedupe on.
func TestTLSWithClientCertificates(t *testing.T) {
	t.Parallel()
	certs := testenv.NewCerts(t)
	amqpTarget, err := url.Parse(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	mq := testenv.NewTLSProxy(t, certs, amqpTarget.Host)
	rd := testenv.NewTLSProxy(t, certs, testenv.RedisAddr())
	cfg := testConfig(t)
	amqpURL := *amqpTarget
	amqpURL.Scheme, amqpURL.Host = "amqps", fmt.Sprintf("localhost:%d", mq.Port())
	cfg.AMQPURL = amqpURL.String()
	cfg.AMQPCAFile, cfg.AMQPCertFile, cfg.AMQPKeyFile = certs.CAFile, certs.ClientCert, certs.ClientKey
	cfg.RedisURL = fmt.Sprintf("rediss://localhost:%d/0", rd.Port())
	cfg.RedisCAFile, cfg.RedisCertFile, cfg.RedisKeyFile = certs.CAFile, certs.ClientCert, certs.ClientKey
	cfg.Dedupe = worker.DedupeOn
	cfg.DedupePrefix = testenv.Name(t)
	t.Cleanup(func() { testenv.DeleteRedisPrefix(t, testenv.RedisClient(t), cfg.DedupePrefix) })
	rec := newRecorder()
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		rec.record(d)
		return nil
	})}).start()
	f.publish("", broker.Message{MessageID: "m1", Body: []byte("x")})
	f.publish("", broker.Message{MessageID: "m1", Body: []byte("x")})
	rec.wait(t, 1, 10*time.Second)
	rec.none(t, 500*time.Millisecond) // the second is a duplicate: Redis over TLS answered
	if mq.Clients() == 0 || rd.Clients() == 0 {
		t.Fatalf("TLS clients: amqp %d, redis %d", mq.Clients(), rd.Clients())
	}
}

// TestTLSWithoutClientCertificateFails: the same set-up without the
// client certificate cannot connect, and says why instead of hanging.
func TestTLSWithoutClientCertificateFails(t *testing.T) {
	t.Parallel()
	certs := testenv.NewCerts(t)
	target, _ := url.Parse(testenv.AMQPURL())
	mq := testenv.NewTLSProxy(t, certs, target.Host)
	cfg := testConfig(t)
	u := *target
	u.Scheme, u.Host = "amqps", fmt.Sprintf("localhost:%d", mq.Port())
	cfg.AMQPURL = u.String()
	cfg.AMQPCAFile = certs.CAFile
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Handle(worker.Route{Queue: testenv.Name(t), Handler: worker.HandlerFunc(func(context.Context, *worker.Delivery) error { return nil })}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := w.Run(ctx); err == nil {
		t.Fatal("connected without a client certificate")
	}
	if mq.Clients() != 0 {
		t.Fatal("a handshake without a client certificate succeeded")
	}
}
