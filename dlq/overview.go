package dlq

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/retry"
)

// Route is the queues of one route: its queue, its retry tiers and its
// dead-letter queue.
type Route struct {
	Queue QueueStats
	Tiers []QueueStats
	DLQ   QueueStats
}

// Overview reports the queues of routes, each named by its queue or, with
// a trailing "*", by a prefix of queue names. With m set, the counts come
// from the management API (ready, unacked, consumers, rates) and every
// tier queue it lists is shown; without it, from passive declares (ready
// and consumers) of the tiers of delays, and prefixes are an error.
func Overview(ctx context.Context, conn *broker.Conn, m *Management, routes []string, delays []time.Duration) ([]Route, error) {
	if m != nil {
		all, err := m.Queues(ctx)
		if err != nil {
			return nil, err
		}
		return fromManagement(all, routes), nil
	}
	var out []Route
	for _, r := range routes {
		if strings.HasSuffix(r, "*") {
			return nil, fmt.Errorf("route %q: a prefix needs the management API (-management-url or WARREN_MANAGEMENT_URL)", r)
		}
		q := QueueOf(r)
		rt := Route{Queue: inspect(ctx, conn, q), DLQ: inspect(ctx, conn, retry.DLQ(q))}
		for _, d := range delays {
			rt.Tiers = append(rt.Tiers, inspect(ctx, conn, retry.TierQueue(q, d)))
		}
		out = append(out, rt)
	}
	return out, nil
}

func inspect(ctx context.Context, conn *broker.Conn, q string) QueueStats {
	info, err := conn.Inspect(ctx, q)
	if err != nil {
		return QueueStats{Name: q, Missing: errors.Is(err, broker.ErrNotFound)}
	}
	return QueueStats{Name: q, Ready: info.Messages, Consumers: info.Consumers}
}

// base is the route queue a queue belongs to.
func base(name string) string {
	name = strings.TrimSuffix(name, ".dlq")
	if i := strings.LastIndex(name, ".retry."); i > 0 {
		return name[:i]
	}
	return name
}

func wanted(routes []string, q string) bool {
	for _, r := range routes {
		if p, ok := strings.CutSuffix(r, "*"); ok && strings.HasPrefix(q, p) || q == QueueOf(r) {
			return true
		}
	}
	return false
}

func fromManagement(all []QueueStats, routes []string) []Route {
	byBase := map[string]*Route{}
	for _, q := range all {
		b := base(q.Name)
		if !wanted(routes, b) {
			continue
		}
		rt := byBase[b]
		if rt == nil {
			rt = &Route{Queue: QueueStats{Name: b, Missing: true}, DLQ: QueueStats{Name: retry.DLQ(b), Missing: true}}
			byBase[b] = rt
		}
		switch {
		case q.Name == b:
			rt.Queue = q
		case q.Name == retry.DLQ(b):
			rt.DLQ = q
		default:
			rt.Tiers = append(rt.Tiers, q)
		}
	}
	out := make([]Route, 0, len(byBase))
	for _, rt := range byBase {
		sort.Slice(rt.Tiers, func(i, j int) bool { return tierDelay(rt.Tiers[i].Name) < tierDelay(rt.Tiers[j].Name) })
		out = append(out, *rt)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Queue.Name < out[j].Queue.Name })
	return out
}

func tierDelay(name string) time.Duration {
	d, _ := time.ParseDuration(name[strings.LastIndex(name, ".retry.")+len(".retry."):])
	return d
}
