package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaydev/relay/shared/config"
)

// The operator's files whose PromQL names relay's metrics.
var (
	dashboardFile = filepath.Join("..", "..", "deploy", "grafana", "relay-dashboard.json")
	alertsFile    = filepath.Join("..", "..", "deploy", "helm", "relay", "files", "alerts.yaml")
)

// metricRef finds every word that looks like a metric relay exposes: its
// own (relay_), Go runtime (go_) and process (process_) metrics. It
// over-approximates (a word in an annotation counts too), so nothing the
// dashboard or the alerts name can escape the check.
var metricRef = regexp.MustCompile(`\b(?:relay|go|process)_[a-z0-9_]*[a-z0-9]\b`)

// labelMatch finds a relay metric's label matchers on the labels whose
// values are fixed reasons, kinds and events (listed in each metric's help).
var (
	selectorRef = regexp.MustCompile(`\b(relay_[a-z0-9_]+)\{([^}]*)\}`)
	labelMatch  = regexp.MustCompile(`\b(reason|kind|event)\s*(?:=~|!~|=|!=)\s*"([^"]*)"`)
	descName    = regexp.MustCompile(`fqName: "([^"]+)", help: "((?:[^"\\]|\\.)*)"`)
)

// TestOperationsMetricsExist: every metric the Grafana dashboard and the
// Prometheus alert rules use is served by 'relay all' (both tiers and the
// NATS collectors, registered as the running process registers them), and
// every reason/kind/event label value they match on is one the metric's help
// names. (That the PromQL parses is checked by deploy/manifests-test, which
// may carry Prometheus's parser; relay's own module does not.)
func TestOperationsMetricsExist(t *testing.T) {
	help := servedMetrics(t)
	for _, file := range []string{dashboardFile, alertsFile} {
		exprs := operatorExprs(t, file)
		if len(exprs) < 10 {
			t.Fatalf("%s: found only %d expressions", file, len(exprs))
		}
		seen, reported := map[string]bool{}, map[string]bool{}
		for _, e := range exprs {
			for _, name := range metricRef.FindAllString(e, -1) {
				if seen[name] {
					continue
				}
				seen[name] = true
				if _, ok := lookup(help, name); !ok {
					t.Errorf("%s uses %s, which relay does not serve", file, name)
				}
			}
			for _, sel := range selectorRef.FindAllStringSubmatch(e, -1) {
				h, ok := lookup(help, sel[1])
				if !ok {
					continue // reported above
				}
				for _, m := range labelMatch.FindAllStringSubmatch(sel[2], -1) {
					for _, v := range strings.Split(m[2], "|") {
						if !regexp.MustCompile(`\b`+regexp.QuoteMeta(v)+`\b`).MatchString(h) && !reported[sel[1]+"{"+v] {
							reported[sel[1]+"{"+v] = true
							t.Errorf("%s matches %s{%s=%q}, a value its help does not name: %q", file, sel[1], m[1], v, h)
						}
					}
				}
			}
		}
		if !slices.ContainsFunc(slices.Collect(maps.Keys(seen)), func(n string) bool { return strings.HasPrefix(n, "relay_") }) {
			t.Errorf("%s names no relay_ metric", file)
		}
	}
}

// servedMetrics runs 'relay all' in this process on loopback ports and
// returns the name and help text of every metric its registry describes
// (label vectors included, whether or not they have a child yet).
func servedMetrics(t *testing.T) map[string]string {
	t.Helper()
	cfg, err := benchConfig()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan started, 1)
	done := make(chan error, 1)
	go func() {
		done <- runRoleNotify(ctx, config.RoleAll, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(s started) { ready <- s })
	}()
	var s started
	select {
	case s = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("relay all stopped before it was ready: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay all: %v", err)
		}
	})
	ch := make(chan *prometheus.Desc)
	go func() { s.Registry.Gatherer().(prometheus.Collector).Describe(ch); close(ch) }()
	help := map[string]string{}
	for d := range ch {
		// Desc has no accessors; its String() is stable:
		// Desc{fqName: "…", help: "…", constLabels: {…}, variableLabels: {…}}
		m := descName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		help[m[1]] += m[2] + " "
	}
	for _, want := range []string{"relay_nats_connected", "relay_ingest_messages_total", "relay_fanout_deliveries_total", "process_open_fds", "go_goroutines"} {
		if _, ok := help[want]; !ok {
			t.Fatalf("relay all's registry lacks %s; found %d metrics", want, len(help))
		}
	}
	return help
}

// lookup finds a metric by name, also as a histogram's or summary's
// _bucket, _sum or _count series.
func lookup(help map[string]string, name string) (string, bool) {
	if h, ok := help[name]; ok {
		return h, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if h, ok := help[base]; ok {
				return h, true
			}
		}
	}
	return "", false
}

// operatorExprs returns the PromQL of the dashboard's targets (and template
// variable queries) or, for the rules file, its whole text: the regexps
// above only look at words that name metrics.
func operatorExprs(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Ext(file) != ".json" {
		var exprs []string
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "expr:") {
				exprs = append(exprs, line)
			}
		}
		// Multi-line expressions and annotations: the whole file as well.
		return append(exprs, string(data))
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	return exprs
}
