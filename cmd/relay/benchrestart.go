package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/relaydev/relay/loadgen"
	"github.com/relaydev/relay/shared/natsconn"
)

// benchRestart is `relay bench --restart`: a NATS server in this process,
// two `relay fanout` child processes on it (A and B, configured by this
// environment, e.g. RELAY_FANOUT_DRAIN_SPREAD), receivers watchers held on
// A by the load generator, then SIGTERM to A: a rolling restart. It reports
// how the watchers were closed and how B took their reconnects.
func benchRestart(ctx context.Context, receivers, channels int, jsonOut bool, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "relay bench --restart: %v\n", err)
		return 1
	}
	ns, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: "127.0.0.1:0"})
	if err != nil {
		return fail(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	a, err := startFanoutChild(ns.ClientURL(), stderr)
	if err != nil {
		return fail(err)
	}
	defer a.stop()
	b, err := startFanoutChild(ns.ClientURL(), stderr)
	if err != nil {
		return fail(err)
	}
	defer b.stop()
	rep, err := loadgen.Restart(ctx, loadgen.RestartConfig{
		FanoutA: a.addr, FanoutB: b.addr, Receivers: receivers, Channels: channels,
		Stop:     func() error { return a.cmd.Process.Signal(syscall.SIGTERM) },
		ProbeB:   loadgen.PIDProbe{PID: b.cmd.Process.Pid},
		Progress: stderr,
	})
	if err != nil {
		return fail(err)
	}
	if err := a.wait(time.Minute); err != nil {
		fmt.Fprintf(stderr, "relay bench --restart: fanout A after SIGTERM: %v\n", err)
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Machine loadgen.Machine        `json:"machine"`
			Restart *loadgen.RestartReport `json:"restart"`
		}{loadgen.ReadMachine(), rep}); err != nil {
			return 1
		}
		return 0
	}
	rep.WriteText(stdout)
	return 0
}

// fanoutChild is a `relay fanout` process started by the benchmark.
type fanoutChild struct {
	cmd  *exec.Cmd
	addr string
	done chan error
}

func startFanoutChild(natsURL string, stderr io.Writer) (*fanoutChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "fanout")
	cmd.Env = append(os.Environ(), "RELAY_NATS_URL="+natsURL, "RELAY_FANOUT_ADDR="+addr)
	if os.Getenv("RELAY_LOG_LEVEL") == "" {
		cmd.Env = append(cmd.Env, "RELAY_LOG_LEVEL=warn")
	}
	// Every watcher comes from 127.0.0.1: the per-address limits would
	// refuse all but the first few (4429).
	for _, kv := range [][2]string{{"RELAY_FANOUT_MAX_CONNECTIONS_PER_IP", "0"}, {"RELAY_FANOUT_CONNECT_RATE_PER_IP", ""}} {
		if _, set := os.LookupEnv(kv[0]); !set {
			cmd.Env = append(cmd.Env, kv[0]+"="+kv[1])
		}
	}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &fanoutChild{cmd: cmd, addr: addr, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		select {
		case err := <-c.done:
			c.done <- err
			return nil, fmt.Errorf("relay fanout exited before it was ready: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, errors.New("relay fanout not ready after 30s")
		}
	}
}

// wait waits for the process to exit.
func (c *fanoutChild) wait(d time.Duration) error {
	select {
	case err := <-c.done:
		c.done <- err
		return err
	case <-time.After(d):
		return errors.New("still running")
	}
}

// stop ends the process: SIGTERM, then SIGKILL after 30 s.
func (c *fanoutChild) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	if c.wait(30*time.Second) != nil {
		_ = c.cmd.Process.Kill()
		_ = c.wait(10 * time.Second)
	}
}

// freeLoopbackAddr returns a 127.0.0.1 port nothing listens on now.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
