package console

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/dlq"
)

// indexState is the latest index of the routes' dead-letter queues and
// the scan that builds the next one.
type indexState struct {
	ix       *dlq.Index
	scanning bool
	again    bool // another scan was asked for during this one
	read     int  // letters read by the running scan
	err      string
}

// rescan starts a scan of every dead-letter queue of the routes, or asks
// the running one to scan again when it is done.
func (c *Console) rescan(why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.index.scanning {
		c.index.again = true
		return
	}
	c.index.scanning, c.index.read = true, 0
	c.log.Info("console: indexing dead letters", zap.String("why", why))
	c.goOwned(c.scanLoop)
}

func (c *Console) scanLoop(ctx context.Context) {
	for {
		ix, err := c.scan(ctx)
		c.mu.Lock()
		if err != nil {
			c.index.err = err.Error()
			c.log.Warn("console: indexing failed", zap.Error(err))
		} else {
			c.index.ix, c.index.err = ix, ""
		}
		again := c.index.again && ctx.Err() == nil
		c.index.again, c.index.read, c.index.scanning = false, 0, again
		c.mu.Unlock()
		if !again {
			return
		}
	}
}

func (c *Console) scan(ctx context.Context) (*dlq.Index, error) {
	dlqs, err := c.dlqNames(ctx)
	if err != nil {
		return nil, err
	}
	release, err := c.hold(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return dlq.Scan(ctx, c.cfg.Conn, dlqs, dlq.ScanOptions{Progress: func(done, _ int) {
		c.mu.Lock()
		c.index.read = done
		c.mu.Unlock()
	}})
}

// dlqNames are the dead-letter queues of the routes that exist.
func (c *Console) dlqNames(ctx context.Context) ([]string, error) {
	routes, err := dlq.Overview(ctx, c.cfg.Conn, c.cfg.Management, c.cfg.Routes, nil)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range routes {
		if !r.DLQ.Missing {
			out = append(out, r.DLQ.Name)
		}
	}
	return out, nil
}

// indexView is what pages show of the index.
type indexView struct {
	Ready    bool
	Scanning bool
	Read     int
	Err      string
	Letters  int
	Built    time.Time
	Queues   []dlq.QueueScan
}

func (c *Console) indexNow() (*dlq.Index, indexView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.index
	v := indexView{Ready: s.ix != nil, Scanning: s.scanning, Read: s.read, Err: s.err}
	if s.ix != nil {
		v.Letters, v.Built, v.Queues = s.ix.Len(), s.ix.Built, s.ix.Queues
	}
	return s.ix, v
}

func (c *Console) rescanPost(w http.ResponseWriter, r *http.Request, who string) {
	c.log.Info("console: action", zap.String("action", "rescan"), zap.String("who", who))
	c.rescan("asked by " + who)
	http.Redirect(w, r, "/groups?"+r.PostFormValue("back"), http.StatusSeeOther)
}
