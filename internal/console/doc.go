// Package console is `warren console`: an operator's web UI served from
// the binary, with queues of routes, dead letters grouped by cause, one
// message at a time, replay and purge. Its pages are server-rendered
// (html/template, assets embedded) with a little JavaScript; the work is
// done by package dlq, which the `warren dlq` commands share.
//
// It is secure by default: access needs a token or basic auth, every
// state change is a POST with a CSRF token and a same-origin check, a
// read-only mode refuses state changes, and every action is logged with
// who asked for it.
//
//	c, err := console.New(console.Config{Conn: conn, Routes: []string{"orders"}, Auth: auth, Logger: log})
//	if err != nil {
//		return err
//	}
//	return c.Serve(ctx, listener) // blocks until ctx is done
package console
