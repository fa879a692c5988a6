package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/worker"
)

func topologyCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || (args[0] != "plan" && args[0] != "apply") {
		return errors.New("topology: want plan or apply")
	}
	apply := args[0] == "apply"
	fs := flags("topology "+args[0], "-queue Q [-exchange X -binding-key K ...]")
	queue := fs.String("queue", "", "queue (required)")
	exchange := fs.String("exchange", "", "exchange to bind the queue to")
	kind := fs.String("exchange-kind", "topic", "exchange kind")
	var keys multi
	fs.Var(&keys, "binding-key", "binding key (repeatable)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("topology: unexpected argument %q", pos[0])
	}
	if *queue == "" {
		return errors.New("topology: -queue is required")
	}
	cfg, log, err := loadConfigQuiet()
	if err != nil {
		return err
	}
	w, err := worker.New(cfg)
	if err != nil {
		return err
	}
	err = w.Handle(worker.Route{Queue: *queue, Exchange: *exchange, ExchangeKind: *kind, BindingKeys: keys,
		Handler: worker.HandlerFunc(func(context.Context, *worker.Delivery) error { return nil })})
	if err != nil {
		return err
	}
	conn, err := dialBroker(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	top := w.Topology()
	plan, err := conn.Plan(ctx, top)
	if err != nil {
		return err
	}
	differs := printPlan(out, plan)
	if !apply {
		if differs > 0 {
			return fmt.Errorf("topology: %d entities differ from the broker", differs)
		}
		return nil
	}
	if err := conn.Declare(ctx, top); err != nil {
		return err
	}
	fmt.Fprintln(out, "applied")
	return nil
}

// printPlan prints the plan as a table and returns how many entities
// differ from the broker.
func printPlan(out io.Writer, plan []broker.Drift) (differs int) {
	fmt.Fprintf(out, "%-9s %-50s %-18s %s\n", "KIND", "NAME", "STATE", "DETAIL")
	for _, d := range plan {
		fmt.Fprintf(out, "%-9s %-50s %-18s %s\n", d.Kind, d.Name, d.State, d.Detail)
		if d.State == "differs" {
			differs++
		}
	}
	return differs
}
