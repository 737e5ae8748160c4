package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/testutil"
)

// BenchmarkAuthConnect measures connection setup through 'relay all' in
// this process with auth off and with HS256 and ES256 tokens: a TCP sender's
// handshake (dial, CHANNEL TOKEN, +OK, close) and a WebSocket upgrade (dial,
// 101, close). The sub-benchmarks alternate within each -count round, so
// ratios come from the same run:
//
//	go test -run '^$' -bench BenchmarkAuthConnect -count 5 ./cmd/relay
func BenchmarkAuthConnect(b *testing.B) {
	keys := testutil.NewAuthKeys(b)
	perms := auth.Permissions{Send: []string{"bench.>"}, Watch: []string{"bench.>"}}
	tokens := map[string]string{"off": ""}
	for name, k := range map[string]auth.SigningKey{"HS256": keys.HMAC, "ES256": keys.EC} {
		tok, err := auth.Mint(k, auth.MintOptions{Subject: "bench", Permissions: perms, TTL: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		tokens[name] = tok
	}
	for _, edge := range []string{"tcp", "ws"} {
		for _, mode := range []string{"off", "HS256", "ES256"} {
			b.Run(edge+"/"+mode, func(b *testing.B) {
				ingestAddr, fanoutAddr := startAuthBenchServer(b, keys, mode != "off")
				tok := tokens[mode]
				cpu0 := processCPU()
				b.ResetTimer()
				for b.Loop() {
					var err error
					if edge == "tcp" {
						err = tcpHandshake(ingestAddr, tok)
					} else {
						err = wsUpgrade(fanoutAddr, tok)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
				// CPU time (client and server, both in this process) per
				// connection: on a shared machine it varies far less than
				// the wall clock, and the modes differ only by auth's share.
				b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/conn")
			})
		}
	}
}

func startAuthBenchServer(b *testing.B, keys testutil.AuthKeys, on bool) (ingest, fanout string) {
	b.Helper()
	cfg, err := config.Load()
	if err != nil {
		b.Fatal(err)
	}
	cfg.Ingest.Listeners = config.MustParseListeners("127.0.0.1:0=*/line")
	cfg.Ingest.HTTPAddr = ""
	cfg.Fanout.Addr = "127.0.0.1:0"
	cfg.Ingest.MaxConnections, cfg.Fanout.MaxConnections = 100000, 100000
	// Every connection comes from 127.0.0.1: the per-address limits would
	// measure themselves, not authentication.
	cfg.Ingest.MaxConnectionsPerIP, cfg.Fanout.MaxConnectionsPerIP = 0, 0
	cfg.Ingest.ConnectRatePerIP, cfg.Fanout.ConnectRatePerIP = "", ""
	cfg.ShutdownGrace = 5 * time.Second
	cfg.AuthMode = "off"
	if on {
		cfg.AuthMode, cfg.HMACSecretFile, cfg.PublicKeysFile = "jwt", keys.HMACFile, keys.PublicFile
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan started, 1)
	done := make(chan error, 1)
	log := slog.New(slog.DiscardHandler)
	go func() { done <- runRoleNotify(ctx, config.RoleAll, cfg, log, func(s started) { ready <- s }) }()
	b.Cleanup(func() { cancel(); <-done })
	select {
	case s := <-ready:
		return s.IngestAddr[0].String(), s.FanoutAddr.String()
	case err := <-done:
		b.Fatal(err)
	}
	return "", ""
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func tcpHandshake(addr, tok string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line := "bench.0"
	if tok != "" {
		line += " " + tok
	}
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || reply != "+OK\n" {
		return fmt.Errorf("handshake: %q %v", reply, err)
	}
	return nil
}

func wsUpgrade(addr, tok string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws/bench.0", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return err
	}
	return c.CloseNow()
}
