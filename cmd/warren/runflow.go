package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/warrenmq/warren/worker"
)

// flowFlags are run's flags for the route's flow control: order per key,
// per-key limits and the pause on a dependency's outage.
type flowFlags struct {
	partitions  int
	orderKey    string
	overtake    bool
	limitKey    string
	limitConc   int
	limitRate   int
	limitPeriod time.Duration
	pauseAfter  int
	pauseMin    time.Duration
	pauseMax    time.Duration
	set         map[string]bool // the flags given on the command line
}

func addFlowFlags(fs *flag.FlagSet) *flowFlags {
	f := &flowFlags{}
	fs.IntVar(&f.partitions, "order-partitions", 0, "order the route per key over N partition queues (needs -exchange and the broker's consistent-hash plugin)")
	fs.StringVar(&f.orderKey, "order-key", "routing-key", "ordering key: routing-key or header:NAME")
	fs.BoolVar(&f.overtake, "order-overtake", false, "retry through the delay tiers, letting the key's next messages overtake a failing one")
	fs.StringVar(&f.limitKey, "limit-key", "", "key of the per-key limits: routing-key, header:NAME or json:FIELD (a top-level body field)")
	fs.IntVar(&f.limitConc, "limit-concurrency", 0, "handlers at once per key, across the fleet (Redis at WARREN_REDIS_URL)")
	fs.IntVar(&f.limitRate, "limit-rate", 0, "handler starts per -limit-period per key, across the fleet (Redis at WARREN_REDIS_URL)")
	fs.DurationVar(&f.limitPeriod, "limit-period", 0, "window of -limit-rate")
	fs.IntVar(&f.pauseAfter, "pause-after", 0, "consecutive failures that pause the route; -1 never (default WARREN_PAUSE_AFTER)")
	fs.DurationVar(&f.pauseMin, "pause-min-backoff", 0, "wait before a paused route's first probe (default WARREN_PAUSE_MIN_BACKOFF)")
	fs.DurationVar(&f.pauseMax, "pause-max-backoff", 0, "longest wait between a paused route's probes (default WARREN_PAUSE_MAX_BACKOFF)")
	return f
}

// seen records which flags fs was given, after parsing.
func (f *flowFlags) seen(fs *flag.FlagSet) {
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
}

// apply checks the flags and sets r's Order, Limits and Pause; cfg
// gives the pause's defaults.
func (f *flowFlags) apply(r *worker.Route, cfg worker.Config) error {
	if err := f.order(r); err != nil {
		return err
	}
	if err := f.limits(r); err != nil {
		return err
	}
	return f.pause(r, cfg)
}

func (f *flowFlags) order(r *worker.Route) error {
	switch {
	case f.partitions == 0:
		for _, name := range []string{"order-key", "order-overtake"} {
			if f.set[name] {
				return fmt.Errorf("run: -%s needs -order-partitions", name)
			}
		}
		return nil
	case f.partitions < 0 || f.partitions > worker.MaxPartitions:
		return fmt.Errorf("run: -order-partitions must be between 1 and %d, got %d", worker.MaxPartitions, f.partitions)
	case r.Exchange == "":
		return errors.New("run: -order-partitions needs -exchange (publishers send to it, it hashes keys over the partitions)")
	case len(r.BindingKeys) > 0:
		return errors.New("run: -binding-key does not apply with -order-partitions (every partition is bound with the same weight)")
	case f.set["exchange-kind"]:
		return errors.New("run: -exchange-kind does not apply with -order-partitions (the exchange is a consistent-hash exchange)")
	}
	r.Order = worker.Order{Partitions: f.partitions, Overtake: f.overtake}
	switch name, ok := strings.CutPrefix(f.orderKey, "header:"); {
	case f.orderKey == "routing-key":
	case ok && name != "":
		r.Order.HashHeader = name
	default:
		return fmt.Errorf("run: -order-key must be routing-key or header:NAME (the broker hashes headers, not bodies), got %q", f.orderKey)
	}
	return nil
}

func (f *flowFlags) limits(r *worker.Route) error {
	limited := f.limitConc != 0 || f.limitRate != 0
	switch {
	case f.limitConc < 0:
		return fmt.Errorf("run: -limit-concurrency must be at least 1, got %d", f.limitConc)
	case f.limitRate < 0:
		return fmt.Errorf("run: -limit-rate must be at least 1, got %d", f.limitRate)
	case f.limitRate > 0 && f.limitPeriod <= 0:
		return errors.New("run: -limit-rate needs a positive -limit-period")
	case f.limitRate == 0 && f.set["limit-period"]:
		return errors.New("run: -limit-period needs -limit-rate")
	case limited && f.limitKey == "":
		return errors.New("run: -limit-key is required with -limit-concurrency or -limit-rate")
	case !limited && f.limitKey != "":
		return errors.New("run: -limit-key needs -limit-concurrency or -limit-rate")
	case limited && f.partitions != 0:
		return errors.New("run: -limit-concurrency and -limit-rate cannot be used with -order-partitions (limited messages go round the tiers, out of order)")
	case !limited:
		return nil
	}
	key, err := limitKey(f.limitKey)
	if err != nil {
		return err
	}
	r.Limits = worker.Limits{Key: key, Concurrency: f.limitConc, Rate: f.limitRate, Period: f.limitPeriod}
	return nil
}

// limitKey is the key function that -limit-key names. A message without
// the key (no such header, a body that is not a JSON object with the
// field) has the empty key, shared by all such messages.
func limitKey(spec string) (func(*worker.Delivery) string, error) {
	if spec == "routing-key" {
		return func(d *worker.Delivery) string { return d.RoutingKey }, nil
	}
	if name, ok := strings.CutPrefix(spec, "header:"); ok && name != "" {
		return func(d *worker.Delivery) string {
			if v, ok := d.Headers[name]; ok {
				return fmt.Sprint(v)
			}
			return ""
		}, nil
	}
	if field, ok := strings.CutPrefix(spec, "json:"); ok && field != "" {
		return func(d *worker.Delivery) string {
			var body map[string]json.RawMessage
			if json.Unmarshal(d.Body, &body) != nil {
				return ""
			}
			var s string
			if json.Unmarshal(body[field], &s) == nil {
				return s
			}
			return string(body[field]) // a number, a bool, an object: its JSON text
		}, nil
	}
	return nil, fmt.Errorf("run: -limit-key must be routing-key, header:NAME or json:FIELD, got %q", spec)
}

func (f *flowFlags) pause(r *worker.Route, cfg worker.Config) error {
	lo, hi := cmp.Or(f.pauseMin, cfg.PauseMinBackoff), cmp.Or(f.pauseMax, cfg.PauseMaxBackoff)
	switch {
	case f.pauseAfter < -1:
		return fmt.Errorf("run: -pause-after must be -1 (never), 0 (WARREN_PAUSE_AFTER) or more, got %d", f.pauseAfter)
	case f.pauseMin < 0:
		return fmt.Errorf("run: -pause-min-backoff must be positive, got %s", f.pauseMin)
	case f.pauseMax < 0:
		return fmt.Errorf("run: -pause-max-backoff must be positive, got %s", f.pauseMax)
	case hi < lo && (f.pauseMin > 0 || f.pauseMax > 0):
		return fmt.Errorf("run: -pause-max-backoff (%s) must be at least -pause-min-backoff (%s)", hi, lo)
	}
	r.Pause = worker.Pause{After: f.pauseAfter, MinBackoff: f.pauseMin, MaxBackoff: f.pauseMax}
	return nil
}
