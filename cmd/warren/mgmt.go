package main

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

// listDLQs asks the management API for every queue named *.dlq.
func listDLQs(ctx context.Context, raw string) ([]string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("management url %s: not a URL", redact.URL(raw))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(raw, "/")+"/api/queues?columns=name", nil)
	if err != nil {
		return nil, fmt.Errorf("management url %s: %w", redact.URL(raw), redact.Error(err, raw))
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		req.SetBasicAuth(u.User.Username(), pw)
		req.URL.User = nil
	}
	client := &http.Client{Timeout: 15 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("listing queues: %w", redact.Error(err, raw))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("listing queues at %s: %s", redact.URL(raw), resp.Status)
	}
	var qs []struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&qs); err != nil {
		return nil, fmt.Errorf("listing queues: %w", err)
	}
	var out []string
	for _, q := range qs {
		if strings.HasSuffix(q.Name, ".dlq") {
			out = append(out, q.Name)
		}
	}
	return out, nil
}
