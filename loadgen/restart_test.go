package loadgen

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/fanout"
	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/natsconn"
)

// TestRollingRestart is issue 11 deliverable 7 at a size CI can afford: 500
// watchers on fanout A, A shut down (as on SIGTERM) while B, on the same
// NATS, stays. Every watcher gets 1001 before its TCP connection closes
// (none sees 1006), the closes are spread over RELAY_FANOUT_DRAIN_SPREAD,
// and every watcher is reconnected to B. `relay bench --restart` runs the
// same with 10,000 watchers and two `relay fanout` processes.
func TestRollingRestart(t *testing.T) {
	const receivers, spread = 500, 2 * time.Second
	ns, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func() (*fanout.Server, *metrics.Fanout, context.CancelFunc, chan error) {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		m := metrics.New().Fanout
		srv, err := fanout.New(fanout.Options{
			Config: config.Fanout{Addr: "127.0.0.1:0", ClientQueue: 1024, ClientQueueBytes: 8 << 20,
				ClientQueueMaxBytes: 8 << 20, SlowGrace: time.Second, DrainSpread: spread,
				WriteTimeout: 5 * time.Second, MaxConnections: 2 * receivers, SubPendingMsgs: 65536, SubPendingBytes: 64 << 20},
			SubjectPrefix: "relay", ShutdownGrace: 20 * time.Second, NATS: nc, Logger: log, Metrics: m,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done; done <- nil })
		return srv, m, cancel, done
	}
	a, _, stopA, doneA := start()
	b, _, _, _ := start()

	rep, err := Restart(context.Background(), RestartConfig{
		FanoutA: a.Addr().String(), FanoutB: b.Addr().String(), Receivers: receivers, Channels: 10,
		DialTimeout: 30 * time.Second,
		Stop:        func() error { stopA(); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-doneA; err != nil {
		t.Errorf("A's Run: %v", err)
	}
	doneA <- nil
	var out strings.Builder
	rep.WriteText(&out)
	t.Log(out.String())
	if rep.GoingAway != receivers || rep.Abnormal != 0 || len(rep.OtherCodes) != 0 {
		t.Errorf("want all %d closed with 1001 before the TCP close: 1001 %d, 1006 %d, other %v",
			receivers, rep.GoingAway, rep.Abnormal, rep.OtherCodes)
	}
	// Spread, not all at once. Only a lower bound: a slow machine stretches it.
	if got := rep.LastClose - rep.FirstClose; got < spread.Seconds()/2 {
		t.Errorf("closes took %.2fs from first to last, want them spread over about %s", got, spread)
	}
	if rep.Reconnected != receivers {
		t.Errorf("reconnected to B: %d of %d (%v)", rep.Reconnected, receivers, rep.FailedBy)
	}
}
