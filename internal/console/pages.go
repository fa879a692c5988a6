package console

import (
	"errors"
	"fmt"
	"net/http"
	"sort"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/dlq"
	"github.com/warrenmq/warren/internal/redact"
)

// view is what every page gets.
type view struct {
	Title    string
	Nav      string
	Who      string
	CSRF     string
	ReadOnly bool
	Index    indexView
	Err      string
	Data     any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, who, name string, v view) {
	v.Who, v.CSRF, v.ReadOnly = who, c.guard.csrf(who), c.cfg.ReadOnly
	_, v.Index = c.indexNow()
	if err := c.pages.render(w, name, v); err != nil {
		c.log.Warn("console: rendering a page", zap.String("page", name), zap.Error(err))
	}
}

type overviewData struct {
	Routes   []dlq.Route
	Detailed bool
	Source   string
}

func (c *Console) overviewPage(w http.ResponseWriter, r *http.Request, who string) {
	d := overviewData{Source: "passive declares (ready and consumers only)"}
	if c.cfg.Management != nil {
		d.Detailed, d.Source = true, "the management API at "+redact.URL(c.cfg.Management.URL)
	}
	v := view{Title: "Queues", Nav: "queues", Data: &d}
	routes, err := dlq.Overview(r.Context(), c.cfg.Conn, c.cfg.Management, c.cfg.Routes, c.cfg.Delays)
	if err != nil {
		v.Err = redact.Error(err, c.mgmtURL()).Error()
	}
	d.Routes = routes
	c.render(w, r, who, "overview", v)
}

func (c *Console) mgmtURL() string {
	if c.cfg.Management == nil {
		return ""
	}
	return c.cfg.Management.URL
}

type groupsData struct {
	Form    filterForm
	Query   string
	Groups  []dlq.Group
	Pager   pager
	Letters int // letters passing the filter
	Queues  []string
}

func (c *Console) groupsPage(w http.ResponseWriter, r *http.Request, who string) {
	form := formOf(r.URL.Query())
	form.Group = ""
	d := groupsData{Form: form, Query: form.query().Encode()}
	v := view{Title: "Dead letters by cause", Nav: "groups", Data: &d}
	f, err := form.filter()
	ix, _ := c.indexNow()
	switch {
	case err != nil:
		v.Err = err.Error()
	case ix != nil:
		page := pageOf(r.URL.Query())
		var total int
		d.Groups, total = ix.Groups(f, page-1, c.cfg.GroupsPage)
		d.Pager = newPager("/groups", form.query(), page, c.cfg.GroupsPage, total)
		_, d.Letters = ix.Entries(f, 0, 0)
		for _, q := range ix.Queues {
			d.Queues = append(d.Queues, q.DLQ)
		}
	}
	c.render(w, r, who, "groups", v)
}

type messagesData struct {
	Form    filterForm
	Query   string
	Group   *dlq.Group
	Entries []dlq.Entry
	Pager   pager
}

func (c *Console) messagesPage(w http.ResponseWriter, r *http.Request, who string) {
	form := formOf(r.URL.Query())
	d := messagesData{Form: form, Query: form.query().Encode()}
	v := view{Title: "Dead letters", Nav: "groups", Data: &d}
	f, err := form.filter()
	ix, _ := c.indexNow()
	switch {
	case err != nil:
		v.Err = err.Error()
	case ix != nil:
		if g, ok := ix.Group(form.Group); ok {
			d.Group = g
		}
		page := pageOf(r.URL.Query())
		var total int
		d.Entries, total = ix.Entries(f, page-1, c.cfg.MessagesPage)
		d.Pager = newPager("/messages", form.query(), page, c.cfg.MessagesPage, total)
	}
	c.render(w, r, who, "messages", v)
}

type kv struct{ K, V string }

type messageData struct {
	Letter   *dlq.Letter
	ID       string
	Props    []kv
	Failure  []kv
	Headers  []kv
	Body     dlq.ShownBody
	Formats  []string
	Original string
}

func (c *Console) messagePage(w http.ResponseWriter, r *http.Request, who string) {
	q := r.URL.Query()
	v := view{Title: "Dead letter", Nav: "groups"}
	id, ok := dlq.ParseID(q.Get("id"))
	if !ok || q.Get("queue") == "" {
		v.Err = "a message is named by queue and id (16 hex digits)"
		w.WriteHeader(http.StatusBadRequest)
		c.render(w, r, who, "message", v)
		return
	}
	l, err := c.find(r, q.Get("queue"), id)
	if err != nil {
		v.Err = err.Error()
		if errors.Is(err, dlq.ErrNoLetter) {
			w.WriteHeader(http.StatusNotFound)
		}
		c.render(w, r, who, "message", v)
		return
	}
	v.Data = describe(l, q.Get("as"))
	c.render(w, r, who, "message", v)
}

func (c *Console) find(r *http.Request, queue string, id dlq.ID) (*dlq.Letter, error) {
	release, err := c.hold(r.Context())
	if err != nil {
		return nil, err
	}
	defer release()
	return dlq.Find(r.Context(), c.cfg.Conn, queue, id)
}

func describe(l *dlq.Letter, as string) *messageData {
	d := &messageData{Letter: l, ID: l.ID.String(), Body: dlq.ShowBody(l.Body, as, dlq.DefaultBodyBytes),
		Formats: []string{dlq.AsText, dlq.AsJSON, dlq.AsHex}}
	m := l.Message
	for _, p := range []kv{{"message id", m.MessageID}, {"correlation id", m.CorrelationID}, {"content type", m.ContentType},
		{"content encoding", m.ContentEncoding}, {"type", m.Type}, {"app id", m.AppID}, {"user id", m.UserID},
		{"reply to", m.ReplyTo}, {"expiration", m.Expiration}} {
		if p.V != "" {
			d.Props = append(d.Props, p)
		}
	}
	if !m.Timestamp.IsZero() {
		d.Props = append(d.Props, kv{"timestamp", m.Timestamp.UTC().Format("2006-01-02 15:04:05 MST")})
	}
	d.Props = append(d.Props, kv{"priority", fmt.Sprint(m.Priority)}, kv{"persistent", fmt.Sprint(!m.Transient)})
	for k, val := range m.Headers {
		if dlq.IsFailureHeader(k) {
			d.Failure = append(d.Failure, kv{k, fmt.Sprint(val)})
		} else {
			d.Headers = append(d.Headers, kv{k, redact.Header(k, val)})
		}
	}
	sort.Slice(d.Failure, func(i, j int) bool { return d.Failure[i].K < d.Failure[j].K })
	sort.Slice(d.Headers, func(i, j int) bool { return d.Headers[i].K < d.Headers[j].K })
	return d
}

func (c *Console) jobPage(w http.ResponseWriter, r *http.Request, who string) {
	j, ok := c.job(r.PathValue("id"))
	if !ok {
		http.NotFound(w, r)
		return
	}
	c.render(w, r, who, "job", view{Title: "Job " + r.PathValue("id"), Nav: "jobs", Data: &j})
}
