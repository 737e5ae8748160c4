package testutil

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSCluster starts n real NATS servers on 127.0.0.1, routed to each other
// (nats-server's test pattern: random ports, no signal handlers, seed
// routes to the first node), waits until every node has a route to every
// other, and shuts them all down when the test ends. Shutting a node down
// earlier (to kill it) is fine.
func NATSCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	var nodes []*server.Server
	t.Cleanup(func() {
		for _, s := range nodes {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	var seed []*url.URL
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("node-%c", 'a'+i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			NoSigs:     true,
			NoLog:      true,
			Cluster: server.ClusterOpts{
				Name: "relay-test",
				Host: "127.0.0.1",
				Port: server.RANDOM_PORT,
				// One route per pair of nodes, so "every node has n-1
				// routes" means the mesh is complete.
				PoolSize: -1,
			},
			Routes: seed,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("nats node %d: %v", i, err)
		}
		s.Start()
		nodes = append(nodes, s)
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("nats node %d not ready", i)
		}
		if i == 0 {
			seed = server.RoutesFromStr("nats://" + s.ClusterAddr().String())
		}
	}
	Eventually(t, 20*time.Second, func() error {
		for _, s := range nodes {
			if got := s.NumRoutes(); got < n-1 {
				return fmt.Errorf("%s has %d of %d routes", s.Name(), got, n-1)
			}
		}
		return nil
	})
	return nodes
}

// ClientURLs joins the nodes' client URLs with commas, as RELAY_NATS_URL
// takes them.
func ClientURLs(nodes ...*server.Server) string {
	urls := make([]string, len(nodes))
	for i, s := range nodes {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}
