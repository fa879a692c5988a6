// Package workertest lets you unit-test warren handlers without a broker:
// build a delivery, run the handler the way a worker does, and check what
// would happen to the message.
//
//	func TestBooking(t *testing.T) {
//		d := workertest.JSONDelivery(t, Order{ID: "o-1"})
//		res := workertest.Run(context.Background(), bookingHandler, d, workertest.Options{})
//		if res.Outcome != worker.OutcomeAck {
//			t.Fatalf("outcome %s: %v", res.Outcome, res.Err)
//		}
//	}
package workertest
