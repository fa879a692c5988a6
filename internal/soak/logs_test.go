package soak

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"time"
)

// logLine is the part of a worker's JSON log line the soak reads.
type logLine struct {
	Level         string    `json:"level"`
	Time          time.Time `json:"time"`
	Logger        string    `json:"logger"`
	Msg           string    `json:"msg"`
	Outcome       string    `json:"outcome"`
	MessageID     string    `json:"message_id"`
	Attempt       int       `json:"attempt"`
	ErrorKind     string    `json:"error_kind"`
	AttemptSpent  *bool     `json:"attempt_spent"`
	ResultDropped bool      `json:"result_dropped"`
	Redelivered   bool      `json:"redelivered"`
	Key           string    `json:"key"`
	ID            string    `json:"id"`
	Token         string    `json:"token"`
	Reason        string    `json:"reason"`
	DurationMS    float64   `json:"duration"` // of an outcome, from the delivery (zap writes milliseconds)
}

// procLog is what one worker process logged.
type procLog struct {
	outcomes    map[string]int       // outcome -> count
	acked       map[string]bool      // message ids with an "ack" outcome
	doneLost    map[string]time.Time // dedupe keys: "done mark not stored", when
	claimLost   map[string]bool      // dedupe keys: "dedupe claim expired before the handler finished"
	uncertain   map[string]time.Time // effect tokens whose outcome the handler never learned, when
	confirmed   int                  // effects confirmed by LPOS after a failed EXEC
	deliveries  int
	redelivered int
	reconnects  int
	connLost    int
	stale       int // results dropped because their channel had closed
	spent       int // retries that spent an attempt
	unspent     map[string]int
	panics      int
	storeDown   int // outcomes because the dedupe store was unavailable (fail closed)
	extendFail  int
	errors      []string   // error-level lines other than the planned panics
	events      []msgEvent // deliveries and outcomes, in log order
	running     bool       // reached "running"
	bad         int        // lines that are not JSON (a line cut by SIGKILL, or stray output)
	badSample   []string
}

func parseLog(path string) (*procLog, error) {
	pl := &procLog{
		outcomes: map[string]int{}, acked: map[string]bool{}, doneLost: map[string]time.Time{},
		claimLost: map[string]bool{}, uncertain: map[string]time.Time{}, unspent: map[string]int{},
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 8*1024*1024)
	for sc.Scan() {
		raw := sc.Bytes()
		if len(raw) == 0 {
			continue
		}
		var l logLine
		if raw[0] != '{' || json.Unmarshal(raw, &l) != nil {
			pl.bad++
			if len(pl.badSample) < 5 {
				pl.badSample = append(pl.badSample, cutStr(string(raw), 300))
			}
			continue
		}
		pl.add(&l, raw)
	}
	return pl, sc.Err()
}

func (pl *procLog) add(l *logLine, raw []byte) {
	if l.Msg == "soak delivery" || l.Outcome != "" {
		took := time.Duration(l.DurationMS * float64(time.Millisecond))
		pl.events = append(pl.events, msgEvent{at: l.Time, id: l.MessageID, outcome: l.Outcome, kind: l.ErrorKind, took: took})
	}
	if l.Outcome != "" {
		pl.outcomes[l.Outcome]++
		if l.Outcome == "ack" {
			pl.acked[l.MessageID] = true
		}
		if l.ResultDropped {
			pl.stale++
		}
		if l.Outcome == "retry" {
			if l.AttemptSpent != nil && *l.AttemptSpent {
				pl.spent++
			} else {
				pl.unspent[l.ErrorKind]++
			}
		}
	}
	switch {
	case l.Msg == "soak delivery":
		pl.deliveries++
		if l.Redelivered {
			pl.redelivered++
		}
	case l.Msg == "reconnected":
		pl.reconnects++
	case l.Msg == "connection lost, reconnecting":
		pl.connLost++
	case l.Msg == "running":
		pl.running = true
	case l.Msg == "handler panicked":
		pl.panics++
	case strings.HasPrefix(l.Msg, "done mark not stored"), strings.HasPrefix(l.Msg, "done mark stored over another owner's claim"):
		pl.doneLost[l.Key] = l.Time
	case strings.HasPrefix(l.Msg, "dedupe claim expired before the handler finished"):
		pl.claimLost[l.Key] = true
	case l.Msg == "soak effect uncertain":
		pl.uncertain[l.Token] = l.Time
	case l.Msg == "soak effect confirmed after error":
		pl.confirmed++
	case strings.HasPrefix(l.Msg, "extending the dedupe claim failed"):
		pl.extendFail++
	}
	if l.Outcome != "" && l.ErrorKind == "store_unavailable" {
		pl.storeDown++
	}
	if l.Level == "error" && l.Msg != "handler panicked" && len(pl.errors) < 20 {
		pl.errors = append(pl.errors, cutStr(string(raw), 500))
	}
}

// msgEvent is a delivery (outcome "") or an outcome of one message.
type msgEvent struct {
	at      time.Time
	id      string
	outcome string
	kind    string        // of an outcome: its error_kind
	took    time.Duration // of an outcome: since its delivery
}

func cutStr(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
