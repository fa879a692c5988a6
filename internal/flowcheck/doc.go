// Package flowcheck holds the acceptance tests of flow control on a route
// (worker.Route.Limits and Route.Pause) as a user would see it: a limit of
// two per key held across three worker processes while the other keys keep
// their throughput, and a dependency down for 30 s under retry tiers of 1s
// and 5s with three attempts, which dead-letters nothing, loses nothing
// and is processed again within seconds after it comes back. It has no
// code of its own; ./limitworker is the worker process of the limit test.
package flowcheck
