package dlq

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/warrenmq/warren/internal/redact"
)

// Management is a client of RabbitMQ's management HTTP API (the
// rabbitmq_management plugin), e.g. http://guest:guest@127.0.0.1:15672.
// The URL's user and password are sent as basic auth and never shown.
type Management struct {
	URL string
	// Vhost limits what is listed to one virtual host (the one the
	// worker's AMQP URL names); "" lists the queues of every vhost the
	// user may see, where queues of the same name in other vhosts would
	// mix with the worker's.
	Vhost string
	// Client defaults to one with a 15s timeout.
	Client *http.Client
}

// QueueStats is what is known of one queue. Fields the source could not
// tell (a passive declare knows no unacked count and no rates) are
// marked by Detailed=false.
type QueueStats struct {
	Name        string
	Ready       int
	Unacked     int
	Consumers   int
	PublishRate float64 // messages per second
	DeliverRate float64
	Detailed    bool // from the management API: unacked and rates are known
	Missing     bool
}

type mgmtQueue struct {
	Name      string `json:"name"`
	Ready     int    `json:"messages_ready"`
	Unacked   int    `json:"messages_unacknowledged"`
	Consumers int    `json:"consumers"`
	Stats     struct {
		Publish struct {
			Rate float64 `json:"rate"`
		} `json:"publish_details"`
		Deliver struct {
			Rate float64 `json:"rate"`
		} `json:"deliver_get_details"`
	} `json:"message_stats"`
}

// Queues lists every queue the API knows.
func (m Management) Queues(ctx context.Context) ([]QueueStats, error) {
	path := "/api/queues"
	if m.Vhost != "" {
		path += "/" + url.PathEscape(m.Vhost)
	}
	req, err := m.request(ctx, path+"?columns=name,messages_ready,messages_unacknowledged,consumers,message_stats")
	if err != nil {
		return nil, err
	}
	client := m.Client
	if client == nil {
		client = &http.Client{Timeout: 15 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("listing queues: %w", redact.Error(err, m.URL))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("listing queues at %s: %s", redact.URL(m.URL), resp.Status)
	}
	var qs []mgmtQueue
	if err := json.NewDecoder(resp.Body).Decode(&qs); err != nil {
		return nil, fmt.Errorf("listing queues at %s: %w", redact.URL(m.URL), err)
	}
	out := make([]QueueStats, len(qs))
	for i, q := range qs {
		out[i] = QueueStats{Name: q.Name, Ready: q.Ready, Unacked: q.Unacked, Consumers: q.Consumers,
			PublishRate: q.Stats.Publish.Rate, DeliverRate: q.Stats.Deliver.Rate, Detailed: true}
	}
	return out, nil
}

func (m Management) request(ctx context.Context, path string) (*http.Request, error) {
	u, err := url.Parse(m.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("management url %s: not a URL", redact.URL(m.URL))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(m.URL, "/")+path, nil)
	if err != nil {
		return nil, fmt.Errorf("management url %s: %w", redact.URL(m.URL), redact.Error(err, m.URL))
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		req.SetBasicAuth(u.User.Username(), pw)
		req.URL.User = nil
	}
	return req, nil
}

// DLQs lists the name of every queue named *.dlq.
func (m Management) DLQs(ctx context.Context) ([]string, error) {
	qs, err := m.Queues(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, q := range qs {
		if strings.HasSuffix(q.Name, ".dlq") {
			out = append(out, q.Name)
		}
	}
	return out, nil
}
