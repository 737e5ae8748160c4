package metrics

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Markdown writes README.md's metrics table: every relay_ metric a process
// serves, with its type, labels and meaning, read from a registry built the
// way relay builds its own, so the table cannot drift from the code
// (TestREADMEMetricsTable). `relay config --metrics-markdown` prints it.
func Markdown(w io.Writer) error {
	r := New()
	// What cmd/relay registers per tier besides the tiers' own metrics
	// (TestREADMEMetricsTableMatchesRelayAll checks against a running relay).
	r.MustRegister(NATSConnected("ingest", func() float64 { return 0 }), NATSEvents("ingest").Collector(),
		MaxConnections("ingest", 0), MaxConnections("fanout", 0))
	mfs, err := r.reg.Gather()
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("| metric | type | labels | meaning |\n|---|---|---|---|\n")
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "relay_") {
			continue
		}
		var labels []string
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(labels, lp.GetName()) {
					labels = append(labels, lp.GetName())
				}
			}
		}
		l := "—"
		if len(labels) > 0 {
			l = strings.Join(labels, ", ")
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", mf.GetName(), strings.ToLower(mf.GetType().String()),
			l, strings.ReplaceAll(mf.GetHelp(), "|", "\\|"))
	}
	_, err = io.WriteString(w, b.String())
	return err
}
