package workertest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/warrenmq/warren/worker"
	"github.com/warrenmq/warren/workertest"
)

// Run shows what a worker would do with a message: here a decode failure
// is dead-lettered at once, and a failing charge is retried.
func ExampleRun() {
	type charge struct {
		Cents int `json:"cents"`
	}
	h := worker.JSON(func(ctx context.Context, d *worker.Delivery, c charge) error {
		if c.Cents > 100_00 {
			return errors.New("card declined")
		}
		return nil
	})
	for _, body := range []string{`{"cents": 500}`, `{"cents": 50000}`, `not json`} {
		res := workertest.Run(context.Background(), h, workertest.Delivery([]byte(body)), workertest.Options{})
		fmt.Printf("%s delay=%s kind=%q reason=%q\n", res.Outcome, res.Delay, res.Kind, res.Reason)
	}
	// Output:
	// ack delay=0s kind="" reason=""
	// retry delay=1s kind="error" reason=""
	// dead_letter delay=0s kind="decode" reason="decode"
}
