package bench

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warrenmq/warren/broker"
)

// summarize fills a result's median, min, max and ratio. baselines holds
// the results already summarized on the same queue type, by case name.
func summarize(c caseDef, res *Result, baselines map[string]*Result) {
	if len(res.Rounds) == 0 {
		return
	}
	vals := make([]float64, len(res.Rounds))
	for i, r := range res.Rounds {
		vals[i] = r.Value
	}
	slices.Sort(vals)
	res.Min, res.Max = vals[0], vals[len(vals)-1]
	if n := len(vals); n%2 == 1 {
		res.Median = vals[n/2]
	} else {
		res.Median = (vals[n/2-1] + vals[n/2]) / 2
	}
	switch {
	case c.baseline != "":
		if b := baselines[c.baseline]; b != nil && len(b.Rounds) > 0 && b.Median > 0 {
			res.Ratio, res.HasRatio = res.Median/b.Median, true
		}
	case c.reference > 0:
		res.Ratio, res.HasRatio = res.Median/c.reference, true
	case c.selfRatio:
		res.Ratio, res.HasRatio = res.Median, true
	}
}

// finish summarizes the results, prints the summary (one table per queue
// type) and the BENCH lines, and returns the report.
func finish(out io.Writer, runs []caseRun) *Report {
	done := map[broker.QueueType]map[string]*Result{}
	rep := &Report{}
	width := len("case")
	for _, r := range runs {
		if done[r.qtype] == nil {
			done[r.qtype] = map[string]*Result{}
		}
		summarize(r.caseDef, r.res, done[r.qtype])
		done[r.qtype][r.name] = r.res
		rep.Results = append(rep.Results, r.res)
		width = max(width, len(r.name))
	}
	rep.PeakRSS, _ = procStatus("self", "VmHWM")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rep.HeapInuse, rep.HeapAlloc = ms.HeapInuse, ms.HeapAlloc

	for i, r := range runs {
		if i == 0 || runs[i-1].qtype != r.qtype {
			fmt.Fprintf(out, "\n== summary: %s queues\n", r.qtype)
			fmt.Fprintf(out, "  %-*s  %12s %-5s  %-25s  %-8s  %-7s  %s\n", width, "case", "median", "unit", "min–max (rounds)", "ratio", "target", "ratio is")
		}
		fmt.Fprintln(out, summaryLine(r, width))
	}
	for _, res := range rep.Results {
		for _, w := range res.Warnings {
			fmt.Fprintf(out, "  WARNING %s (%s): %s\n", res.Case, res.QueueType, w)
		}
		for _, err := range res.Errors {
			fmt.Fprintf(out, "  FAILED %s (%s): %v\n", res.Case, res.QueueType, err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(out, "\nbench process: peak RSS %s MiB (VmHWM); heap at the end: in use %s MiB, allocated %s MiB (after a GC: %s MiB, %s MiB); %d goroutines\n",
		mib(rep.PeakRSS), mib(rep.HeapInuse), mib(rep.HeapAlloc), mib(ms.HeapInuse), mib(ms.HeapAlloc), runtime.NumGoroutine())
	fmt.Fprintln(out)
	for _, r := range runs {
		fmt.Fprintln(out, benchLine(r.caseDef, r.res))
	}
	return rep
}

// summaryLine is a case's line in the summary table.
func summaryLine(r caseRun, width int) string {
	res := r.res
	if len(res.Rounds) == 0 {
		line := fmt.Sprintf("  %-*s  %12s %-5s  %-25s  %-8s  %-7s", width, r.name, "-", r.unit, "no successful round", "-", dash(r.target))
		return strings.TrimRight(line, " ")
	}
	mm := formatValue(res.Min, r.unit) + "–" + formatValue(res.Max, r.unit)
	line := fmt.Sprintf("  %-*s  %12s %-5s  %-25s  %-8s  %-7s  %s", width, r.name, formatValue(res.Median, r.unit), r.unit,
		fmt.Sprintf("%s (%d)", mm, len(res.Rounds)), ratioText(res), dash(r.target), against(r.caseDef, res))
	return strings.TrimRight(line, " ")
}

// benchLine is the parseable line of a case.
func benchLine(c caseDef, res *Result) string {
	value, lo, hi := "-", "-", "-"
	if len(res.Rounds) > 0 {
		value = plain(res.Median, c.unit)
		lo, hi = plain(res.Min, c.unit), plain(res.Max, c.unit)
	}
	ratio := "-"
	if res.HasRatio {
		ratio = strconv.FormatFloat(res.Ratio, 'f', 3, 64)
	}
	return fmt.Sprintf("BENCH case=%s queue=%s value=%s unit=%s min=%s max=%s ratio=%s target=%s",
		c.name, res.QueueType, value, c.unit, lo, hi, ratio, dash(c.target))
}

// against names what the ratio compares with.
func against(c caseDef, res *Result) string {
	switch {
	case c.baseline != "" && !res.HasRatio:
		return "(run " + c.baseline + " too for the ratio)"
	case c.baseline != "":
		return "median / " + c.baseline + " median"
	case c.reference > 0:
		return "median / " + strconv.FormatFloat(c.reference, 'f', 0, 64) + " msg/s (32 handlers x 2 ms)"
	case c.name == "memory-inflight":
		return "HeapInuse / (in-flight messages x body size)"
	}
	return ""
}

func ratioText(res *Result) string {
	if !res.HasRatio {
		return "-"
	}
	return strconv.FormatFloat(res.Ratio, 'f', 2, 64) + "x"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatValue formats a value for people.
func formatValue(v float64, unit string) string {
	switch unit {
	case UnitRate:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case UnitRatio:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
}

// plain formats a value for the BENCH line: no grouping, a dot decimal
// separator.
func plain(v float64, unit string) string {
	switch unit {
	case UnitRate:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case UnitRatio:
		return strconv.FormatFloat(v, 'f', 3, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func mib(b uint64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) }

// joinNonEmpty joins the non-empty parts with "; ".
func joinNonEmpty(parts ...string) string {
	var keep []string
	for _, p := range parts {
		if strings.TrimSpace(p) != "" {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, "; ")
}

// cpuClock reads the CPU time this process has used (user and system), so
// that a round can say what each message cost the client side.
type cpuClock struct{ start time.Duration }

func startCPU() cpuClock { return cpuClock{start: processCPU()} }

// perMessage is the CPU time used since the clock started, per message,
// as text ("" when the platform does not tell).
func (c cpuClock) perMessage(n int) string {
	used := processCPU() - c.start
	if used <= 0 || n <= 0 {
		return ""
	}
	return fmt.Sprintf("client CPU %.1fµs/msg", float64(used.Microseconds())/float64(n))
}
