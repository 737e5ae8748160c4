package testutil

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// JetStreamCluster starts n real NATS servers with JetStream on 127.0.0.1,
// routed to each other as NATSCluster's are, each with its file store in
// its own temporary directory, and waits until every node has its routes
// and the JetStream meta group has a leader (streams can be created). The
// nodes shut down when the test ends; shutting one down earlier (to kill
// it) is fine.
func JetStreamCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir() // before the shutdown below is registered: removed after it
	}
	var nodes []*server.Server
	t.Cleanup(func() {
		for _, s := range nodes {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	// JetStream's meta group must know its peers from the start, so every
	// node is given routes to all: the cluster ports are picked up front.
	ports := make([]int, n)
	var routes []*url.URL
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])})
	}
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("js-%c", 'a'+i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			NoSigs:     true,
			NoLog:      true,
			JetStream:  true,
			StoreDir:   dirs[i],
			Cluster: server.ClusterOpts{
				Name:     "relay-js-test",
				Host:     "127.0.0.1",
				Port:     ports[i],
				PoolSize: -1,
			},
			Routes: routes,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("nats node %d: %v", i, err)
		}
		nodes = append(nodes, s)
		go s.Start()
	}
	for i, s := range nodes {
		if !s.ReadyForConnections(30 * time.Second) {
			t.Fatalf("nats node %d not ready", i)
		}
	}
	Eventually(t, 60*time.Second, func() error {
		leader := false
		for _, s := range nodes {
			if got := s.NumRoutes(); got < n-1 {
				return fmt.Errorf("%s has %d of %d routes", s.Name(), got, n-1)
			}
			leader = leader || s.JetStreamIsLeader()
		}
		if !leader {
			return errors.New("no JetStream meta leader yet")
		}
		return nil
	})
	return nodes
}

// Servers is a nats.Option that makes a client know every node of a
// cluster (and so reconnect to a survivor), whatever URL it was given.
func Servers(nodes ...*server.Server) nats.Option {
	return func(o *nats.Options) error {
		o.Servers = nil
		for _, s := range nodes {
			o.Servers = append(o.Servers, s.ClientURL())
		}
		return nil
	}
}
