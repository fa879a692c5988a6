package console

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/dlq"
)

// maxJobs bounds the jobs kept for their pages; running jobs are
// always kept.
const maxJobs = 50

// maxPlanned bounds the letters a dry run lists.
const maxPlanned = 200

// job is a replay or a purge, run by the console, watched on its page.
type job struct {
	ID      int
	What    string // e.g. "replay group 1a2b… of orders.dlq to orders"
	Verb    string // what is done to each letter: "replayed", "purged"
	Who     string
	DryRun  bool
	Started time.Time
	Ended   time.Time
	Done    bool
	Err     string
	Total   int // letters in the queues when it began
	Seen    int
	Moved   int // replayed, would be replayed, or purged
	Planned []planned
}

type planned struct{ MessageID, ID, Exchange, Key, Error string }

type jobList struct {
	next int
	all  []*job
}

// start registers a job and runs fn for it in an owned goroutine; fn
// reports progress through update.
func (c *Console) start(j *job, fn func(ctx context.Context, update func(func(*job))) error) int {
	c.mu.Lock()
	c.jobs.next++
	j.ID, j.Started = c.jobs.next, time.Now()
	c.jobs.all = keepJobs(append(c.jobs.all, j))
	c.mu.Unlock()
	c.log.Info("console: action", zap.Int("job", j.ID), zap.String("action", j.What), zap.String("who", j.Who), zap.Bool("dry_run", j.DryRun))
	update := func(f func(*job)) {
		c.mu.Lock()
		f(j)
		c.mu.Unlock()
	}
	c.goOwned(func(ctx context.Context) {
		err := fn(ctx, update)
		update(func(j *job) {
			j.Done, j.Ended = true, time.Now()
			if err != nil {
				j.Err = err.Error()
			}
		})
		fields := []zap.Field{zap.Int("job", j.ID), zap.String("action", j.What), zap.String("who", j.Who),
			zap.Bool("dry_run", j.DryRun), zap.Int("moved", j.Moved), zap.Int("seen", j.Seen)}
		if err != nil {
			c.log.Warn("console: action failed", append(fields, zap.Error(err))...)
		} else {
			c.log.Info("console: action done", fields...)
		}
		if !j.DryRun {
			c.rescan(fmt.Sprintf("job %d changed the queues", j.ID))
		}
	})
	return j.ID
}

// keepJobs drops the oldest finished job while all holds more than
// maxJobs. A running job stays, so its page can be watched to the end.
func keepJobs(all []*job) []*job {
	for len(all) > maxJobs {
		i := slices.IndexFunc(all, func(j *job) bool { return j.Done })
		if i < 0 {
			break
		}
		all = slices.Delete(all, i, i+1)
	}
	return all
}

// job returns a copy of job id.
func (c *Console) job(idText string) (job, bool) {
	id, err := strconv.Atoi(idText)
	if err != nil {
		return job{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, j := range c.jobs.all {
		if j.ID == id {
			cp := *j
			cp.Planned = append([]planned(nil), j.Planned...)
			return cp, true
		}
	}
	return job{}, false
}

// replayJob replays from each dead-letter queue in turn with the same
// options but the queue.
func (c *Console) replayJob(dlqs []string, o dlq.ReplayOptions) func(context.Context, func(func(*job))) error {
	return func(ctx context.Context, update func(func(*job))) error {
		release, err := c.hold(ctx)
		if err != nil {
			return err
		}
		defer release()
		base := dlq.ReplayResult{}
		var errs []error
		for _, q := range dlqs {
			o := o
			o.Queue = q
			o.OnLetter = func(l *dlq.Letter, ex, key string) {
				if o.DryRun {
					update(func(j *job) { j.plan(l, ex, key) })
				}
			}
			o.Progress = func(r dlq.ReplayResult) {
				update(func(j *job) {
					j.Total, j.Seen, j.Moved = base.Total+r.Total, base.Seen+r.Seen, base.Replayed+r.Replayed
				})
			}
			res, err := dlq.Replay(ctx, c.cfg.Conn, c.pub, o)
			base.Total, base.Seen, base.Replayed = base.Total+res.Total, base.Seen+res.Seen, base.Replayed+res.Replayed
			update(func(j *job) { j.Total, j.Seen, j.Moved = base.Total, base.Seen, base.Replayed })
			if err != nil {
				// The other DLQs are replayed all the same: a letter
				// refused in one says nothing about the others.
				errs = append(errs, err)
			}
			if ctx.Err() != nil {
				break
			}
		}
		return errors.Join(errs...)
	}
}

func (j *job) plan(l *dlq.Letter, ex, key string) {
	if len(j.Planned) < maxPlanned {
		j.Planned = append(j.Planned, planned{MessageID: l.MessageID, ID: l.ID.String(), Exchange: ex, Key: key, Error: l.Error})
	}
}

func (c *Console) purgeJob(q string) func(context.Context, func(func(*job))) error {
	return func(ctx context.Context, update func(func(*job))) error {
		release, err := c.hold(ctx)
		if err != nil {
			return err
		}
		defer release()
		n, err := c.cfg.Conn.Purge(ctx, q)
		update(func(j *job) { j.Moved, j.Total, j.Seen = n, n, n })
		return err
	}
}
