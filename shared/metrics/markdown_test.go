package metrics

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestREADMEMetricsTable keeps README.md's metrics table generated from the
// registry: run `go run ./cmd/relay config --metrics-markdown` to refresh it.
func TestREADMEMetricsTable(t *testing.T) {
	t.Parallel()
	var table bytes.Buffer
	if err := Markdown(&table); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, table.Bytes()) {
		t.Fatalf("README.md's metrics table is out of date; replace it with the output of\n  go run ./cmd/relay config --metrics-markdown\n\n%s", table.String())
	}
}

// TestMetricsTableIsComplete: every collector relay registers has a row. A
// labelled metric shows in the registry only once it has a series, so one
// that is not created with its series (as ReasonCounter does) would be
// missing from the table without this test.
func TestMetricsTableIsComplete(t *testing.T) {
	t.Parallel()
	r := New()
	cs := append(r.Ingest.collectors(), r.Fanout.collectors()...)
	cs = append(cs, NATSConnected("ingest", func() float64 { return 0 }), NATSEvents("ingest").Collector(),
		MaxConnections("ingest", 0), MaxConnections("fanout", 0))
	descs := make(chan *prometheus.Desc, 100)
	for _, c := range cs {
		c.Describe(descs)
	}
	close(descs)
	want := 0
	for range descs {
		want++
	}
	var table bytes.Buffer
	if err := Markdown(&table); err != nil {
		t.Fatal(err)
	}
	if rows := strings.Count(table.String(), "\n| `relay_"); rows != want {
		t.Fatalf("the metrics table has %d rows, relay registers %d metrics:\n%s", rows, want, table.String())
	}
}
