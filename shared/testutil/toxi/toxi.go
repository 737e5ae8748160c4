// Package toxi runs a Toxiproxy proxy inside the test process
// (github.com/Shopify/toxiproxy/v2, the server package itself, not its HTTP
// API), so a test can put real network faults — latency, a bandwidth limit,
// connection resets, sliced writes, a blackhole — between a client and a
// real server without Docker or a separate toxiproxy binary.
package toxi

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// Toxic types (Toxiproxy's names) and their attributes, as its README
// documents them.
const (
	Latency   = "latency"    // latency, jitter: milliseconds
	Bandwidth = "bandwidth"  // rate: KB/s
	ResetPeer = "reset_peer" // timeout: milliseconds before the reset (0: at once)
	Slicer    = "slicer"     // average_size, size_variation: bytes; delay: microseconds
	Timeout   = "timeout"    // timeout: milliseconds before closing (0: never; data is dropped: a blackhole)
)

// Streams a toxic acts on: upstream is client -> server, downstream is
// server -> client.
const (
	Upstream   = "upstream"
	Downstream = "downstream"
)

var (
	apiOnce sync.Once
	api     *toxiproxy.ApiServer
)

// apiServer is the one in-process Toxiproxy server every proxy belongs to;
// its HTTP API is never started.
func apiServer() *toxiproxy.ApiServer {
	apiOnce.Do(func() {
		// The toxics log through zerolog's global logger (trace lines for
		// every interrupted pipe); test output needs none of it.
		zerolog.SetGlobalLevel(zerolog.Disabled)
		api = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	})
	return api
}

// Proxy forwards 127.0.0.1:<random port> to an upstream address, with the
// toxics the test adds.
type Proxy struct {
	t testing.TB
	p *toxiproxy.Proxy

	mu     sync.Mutex
	toxics []string // names added and not yet removed
}

// New starts a proxy to upstream (host:port) and stops it when the test
// ends, closing every connection through it.
func New(t testing.TB, upstream string) *Proxy {
	t.Helper()
	p := toxiproxy.NewProxy(apiServer(), t.Name(), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return &Proxy{t: t, p: p}
}

// Addr is where clients connect instead of the upstream.
func (p *Proxy) Addr() string { return p.p.Listen }

// URL is Addr as a nats:// URL.
func (p *Proxy) URL() string { return "nats://" + p.p.Listen }

// Add adds a toxic of typ with attrs on the given streams (both when none
// are given). Existing connections are affected at once, new ones too.
func (p *Proxy) Add(typ string, attrs map[string]any, streams ...string) {
	p.t.Helper()
	if len(streams) == 0 {
		streams = []string{Upstream, Downstream}
	}
	for _, s := range streams {
		name := typ + "_" + s
		body, _ := json.Marshal(map[string]any{"name": name, "type": typ, "stream": s, "toxicity": 1.0, "attributes": attrs})
		if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(string(body))); err != nil {
			p.t.Fatalf("toxiproxy: add %s: %v", name, err)
		}
		p.mu.Lock()
		p.toxics = append(p.toxics, name)
		p.mu.Unlock()
	}
}

// Heal removes every toxic: the link works normally again.
func (p *Proxy) Heal() {
	p.t.Helper()
	p.mu.Lock()
	names := p.toxics
	p.toxics = nil
	p.mu.Unlock()
	for _, name := range names {
		if err := p.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
			p.t.Fatalf("toxiproxy: remove %s: %v", name, err)
		}
	}
}

// String describes the proxy for test logs.
func (p *Proxy) String() string { return fmt.Sprintf("toxiproxy %s -> %s", p.p.Listen, p.p.Upstream) }
