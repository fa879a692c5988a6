package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/dlq"
	"github.com/warrenmq/warren/internal/redact"
)

// replayPost starts a replay of one letter (scope=one: queue, id), a
// selection (scope=selection: queue, id...), a group (scope=group: group)
// or a filter (scope=filter: text, queue, since, until), to the queue or
// to the original route (target=original), for real or as a dry run.
func (c *Console) replayPost(w http.ResponseWriter, r *http.Request, who string) {
	o := dlq.ReplayOptions{DryRun: r.PostFormValue("dry_run") != "", OriginalRoute: r.PostFormValue("target") == "original"}
	dlqs, what, err := c.replayScope(r, &o)
	if err != nil {
		http.Error(w, "400 bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	what = fmt.Sprintf("replay %s %s", what, o.Describe())
	id := c.start(&job{What: what, Verb: "replayed", Who: who, DryRun: o.DryRun}, c.replayJob(dlqs, o))
	http.Redirect(w, r, "/jobs/"+strconv.Itoa(id), http.StatusSeeOther)
}

func (c *Console) replayScope(r *http.Request, o *dlq.ReplayOptions) (dlqs []string, what string, err error) {
	_ = r.ParseForm()
	switch scope := r.PostFormValue("scope"); scope {
	case "one", "selection":
		q := r.PostFormValue("queue")
		sel := dlq.Selection{}
		for _, s := range r.PostForm["id"] {
			id, ok := dlq.ParseID(s)
			if !ok {
				return nil, "", fmt.Errorf("id %q: want 16 hex digits", s)
			}
			sel[id]++
		}
		if q == "" || len(sel) == 0 {
			return nil, "", fmt.Errorf("scope %s: want a queue and at least one id (tick some messages)", scope)
		}
		o.Match, o.Limit = sel.Match, sel.Len()
		return []string{dlq.Name(q)}, fmt.Sprintf("%d selected message(s) of %s", sel.Len(), dlq.Name(q)), nil
	case "group":
		ix, _ := c.indexNow()
		g, ok := (*dlq.Group)(nil), false
		if ix != nil {
			g, ok = ix.Group(r.PostFormValue("group"))
		}
		if !ok {
			return nil, "", fmt.Errorf("group %q: not in the index (rescan?)", r.PostFormValue("group"))
		}
		o.Match = dlq.Filter{Group: g.Key}.Match
		return []string{g.DLQ}, fmt.Sprintf("group %s (%s: %s) of %s", g.Key, g.Kind, g.Fingerprint, g.DLQ), nil
	case "filter":
		return c.filterScope(r, o)
	default:
		return nil, "", fmt.Errorf("scope %q: want one, selection, group or filter", scope)
	}
}

func (c *Console) filterScope(r *http.Request, o *dlq.ReplayOptions) ([]string, string, error) {
	form := formOf(r.PostForm)
	f, err := form.filter()
	if err != nil {
		return nil, "", err
	}
	ix, _ := c.indexNow()
	if ix == nil {
		return nil, "", fmt.Errorf("the dead letters are not indexed yet")
	}
	var dlqs []string
	for _, q := range ix.Queues {
		if !q.Missing && (f.Queue == "" || dlq.Name(f.Queue) == q.DLQ) {
			dlqs = append(dlqs, q.DLQ)
		}
	}
	o.Match = f.Match
	return dlqs, fmt.Sprintf("the letters matching %s of %s", describeFilter(form), strings.Join(dlqs, ", ")), nil
}

func describeFilter(f filterForm) string {
	if q := f.query().Encode(); q != "" {
		return "[" + q + "]"
	}
	return "[everything]"
}

// purgePost deletes every ready message of a dead-letter queue of the
// console's routes, once its name was typed again as confirmation.
func (c *Console) purgePost(w http.ResponseWriter, r *http.Request, who string) {
	q := dlq.Name(r.PostFormValue("queue"))
	if r.PostFormValue("confirm") != q {
		c.log.Warn("console: purge not confirmed", zap.String("who", who), zap.String("queue", q))
		http.Error(w, fmt.Sprintf("400 bad request: to purge, type the queue name %s into the confirmation field", q), http.StatusBadRequest)
		return
	}
	if !c.ownsDLQ(r, q) {
		http.Error(w, fmt.Sprintf("400 bad request: %s is not a dead-letter queue of this console's routes", q), http.StatusBadRequest)
		return
	}
	id := c.start(&job{What: "purge " + q, Verb: "purged", Who: who}, c.purgeJob(q))
	http.Redirect(w, r, "/jobs/"+strconv.Itoa(id), http.StatusSeeOther)
}

func (c *Console) ownsDLQ(r *http.Request, q string) bool {
	names, err := c.dlqNames(r.Context())
	if err != nil {
		return false
	}
	for _, n := range names {
		if n == q {
			return true
		}
	}
	return false
}

func (c *Console) jobStatus(w http.ResponseWriter, r *http.Request, _ string) {
	j, ok := c.job(r.PathValue("id"))
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"done": j.Done, "total": j.Total, "seen": j.Seen, "moved": j.Moved, "error": redact.Text(j.Err)})
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if c.guard.auth.Token == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	c.render(w, r, "", "login", view{Title: "Sign in"})
}

func (c *Console) loginPost(w http.ResponseWriter, r *http.Request) {
	if !c.guard.login(w, r) {
		w.WriteHeader(http.StatusUnauthorized)
		c.render(w, r, "", "login", view{Title: "Sign in", Err: "wrong token"})
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}
