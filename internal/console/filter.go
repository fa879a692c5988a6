package console

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/warrenmq/warren/dlq"
)

// filterForm is a filter as its form fields carry it.
type filterForm struct {
	Text, Queue, Since, Until, Group string
}

func formOf(v url.Values) filterForm {
	return filterForm{Text: strings.TrimSpace(v.Get("text")), Queue: strings.TrimSpace(v.Get("queue")),
		Since: strings.TrimSpace(v.Get("since")), Until: strings.TrimSpace(v.Get("until")), Group: v.Get("group")}
}

// filter parses the form; a bad time is an error naming the field.
func (f filterForm) filter() (dlq.Filter, error) {
	out := dlq.Filter{Text: f.Text, Queue: f.Queue, Group: f.Group}
	var err error
	if out.Since, err = parseTime("since", f.Since); err != nil {
		return out, err
	}
	out.Until, err = parseTime("until", f.Until)
	return out, err
}

// parseTime reads RFC 3339 or a browser's datetime-local value (UTC).
func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s: %q is not a time (want e.g. 2026-01-02T15:04 in UTC)", field, s)
}

// query is the filter as URL parameters, for links.
func (f filterForm) query() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"text": f.Text, "queue": f.Queue, "since": f.Since, "until": f.Until, "group": f.Group} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

// pager is a page of a list.
type pager struct {
	Page, Pages, Total int
	Prev, Next         string // links, "" when none
}

func pageOf(v url.Values) int {
	p, err := strconv.Atoi(v.Get("page"))
	if err != nil || p < 1 {
		return 1
	}
	return p
}

func newPager(path string, q url.Values, page, per, total int) pager {
	p := pager{Page: page, Total: total, Pages: max(1, (total+per-1)/per)}
	link := func(n int) string {
		v := url.Values{}
		for k, s := range q {
			v[k] = s
		}
		v.Set("page", strconv.Itoa(n))
		return path + "?" + v.Encode()
	}
	if page > 1 {
		p.Prev = link(page - 1)
	}
	if page < p.Pages {
		p.Next = link(page + 1)
	}
	return p
}
