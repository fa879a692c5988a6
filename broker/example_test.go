package broker_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/warrenmq/warren/broker"
)

// A confirmed publish: Publish returns once the broker has taken
// responsibility for the message.
func ExamplePublisher_Publish() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := broker.Dial(ctx, broker.Config{URL: "amqp://guest:guest@127.0.0.1:5672/"})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	pub := conn.NewPublisher()
	defer pub.Close()
	err = pub.Publish(ctx, "events", "user.signed_up", broker.Message{
		ContentType: "application/json",
		Body:        []byte(`{"email":"ada@example.com"}`),
	})
	if err != nil {
		log.Fatal(err)
	}
}

// printAcks is an Acknowledger that prints what is done with each
// delivery: code that settles deliveries can be tested without a broker.
type printAcks struct{}

func (printAcks) Ack(tag uint64) error    { fmt.Println("ack", tag); return nil }
func (printAcks) AckNow(tag uint64) error { fmt.Println("ack now", tag); return nil }
func (printAcks) Closed() bool            { return false }
func (printAcks) Nack(tag uint64, requeue bool) error {
	fmt.Println("nack", tag, "requeue", requeue)
	return nil
}

// A Delivery settles through its Acknowledger.
func ExampleAcknowledger() {
	d := &broker.Delivery{Message: broker.Message{Body: []byte("hi")}, Acknowledger: printAcks{}, DeliveryTag: 7}
	_ = d.Nack(true)
	// Output: nack 7 requeue true
}
