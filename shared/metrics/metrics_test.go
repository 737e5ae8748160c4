package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRegistryServesRelayMetrics(t *testing.T) {
	t.Parallel()
	r := New()
	r.Ingest.Refused.Inc(IngestTooLarge)
	r.Fanout.SlowConsumers.Inc(SlowClient)
	r.MustRegister(NATSConnected("ingest", func() float64 { return 1 }))
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`relay_ingest_refused_total{reason="too_large"} 1`,
		`relay_fanout_slow_consumers_total{kind="client"} 1`,
		`relay_nats_connected{tier="ingest"} 1`,
		`relay_fanout_connections 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
