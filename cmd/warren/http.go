package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/warrenmq/warren/worker"
)

// httpHandler POSTs each message. 2xx acks; 408, 429, 5xx and connection
// errors retry (honouring Retry-After); any other status dead-letters.
type httpHandler struct {
	url    string
	client *http.Client
}

func newHTTPHandler(raw string) (*httpHandler, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("run: -http must be an http:// or https:// URL")
	}
	return &httpHandler{url: raw, client: &http.Client{}}, nil
}

func (h *httpHandler) Handle(ctx context.Context, d *worker.Delivery) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(d.Body))
	if err != nil {
		return worker.Permanent(err)
	}
	if d.ContentType != "" {
		req.Header.Set("Content-Type", d.ContentType)
	}
	for _, kv := range metadata(d) {
		req.Header.Set("X-Warren-"+strings.ReplaceAll(kv[0], "_", "-"), kv[1])
	}
	// The handler run's trace context: traceparent, tracestate.
	for k, v := range handlerTrace(ctx, d) {
		req.Header.Set(k, v)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", h.url, err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return h.outcome(resp, snippet)
}

func (h *httpHandler) outcome(resp *http.Response, body []byte) error {
	code := resp.StatusCode
	err := fmt.Errorf("POST %s: %s: %s", h.url, resp.Status, bytes.TrimSpace(body))
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		if d, ok := retryAfterDelay(resp.Header.Get("Retry-After"), time.Now()); ok {
			return worker.RetryAfter(d, err)
		}
		return err
	}
	return worker.Permanent(err)
}
