package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/relaydev/relay/shared/testutil"
)

// relayBin is the relay binary built once for the end-to-end tests.
var relayBin string

func TestMain(m *testing.M) {
	if addr := os.Getenv(natsChildEnv); addr != "" {
		runNATSChild(addr) // the freeze test's NATS server (faults_test.go)
	}
	dir, err := os.MkdirTemp("", "relay-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayBin = filepath.Join(dir, "relay")
	build := exec.Command("go", "build", "-o", relayBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building relay:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// The in-process Toxiproxy (test harness, not relay) can leave a
		// noop toxic's pipe blocked on its channel after its proxy stops.
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe")); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Ports for relay processes come from below the kernel's ephemeral range
// (32768-60999 on Linux), which bind(":0") and outgoing connections draw
// from: a port handed out here cannot be taken by another test's listener or
// client between the check and relay binding it (or while a test restarts
// relay on the same ports). Each test process starts at its own offset, so
// packages tested in parallel do not collide either.
var nextPort atomic.Int32

func init() { nextPort.Store(int32(20000 + os.Getpid()%500*24)) }

// freePort returns a free 127.0.0.1 address for a relay process.
func freePort(t testing.TB) string {
	t.Helper()
	for range 1000 {
		p := nextPort.Add(1)
		if p >= 32768 {
			nextPort.Store(20000)
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		return addr
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// proc is a relay process started by a test.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRelay runs `relay args...` with env added to this environment.
func startRelay(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(relayBin, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("relay %v stderr:\n%s", args, p.stderr.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("relay did not exit within %s", timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

func waitReady(t testing.TB, urls ...string) {
	t.Helper()
	for _, u := range urls {
		testutil.Eventually(t, 30*time.Second, func() error {
			resp, err := http.Get(u)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", u, resp.Status)
			}
			return nil
		})
	}
}

// wsReceiver collects messages from a WebSocket until it closes, and
// counts those that came as binary frames.
type wsReceiver struct {
	mu     sync.Mutex
	msgs   []string
	binary int
	closed chan struct{}
	status websocket.StatusCode
}

func dialWS(t *testing.T, url string) *wsReceiver {
	t.Helper()
	r, _ := dialWSOpts(t, url, nil)
	return r
}

// dialWSOpts dials url and reads every message into a wsReceiver until the
// connection closes; the connection is returned for tests that close it.
func dialWSOpts(t *testing.T, url string, opts *websocket.DialOptions) (*wsReceiver, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	r := &wsReceiver{closed: make(chan struct{})}
	go func() {
		defer close(r.closed)
		defer c.CloseNow()
		for {
			typ, data, err := c.Read(context.Background())
			if err != nil {
				r.status = websocket.CloseStatus(err)
				return
			}
			r.mu.Lock()
			r.msgs = append(r.msgs, string(data))
			if typ != websocket.MessageText {
				r.binary++
			}
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.CloseNow(); <-r.closed })
	return r, c
}

func (r *wsReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *wsReceiver) binaryCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.binary
}

func (r *wsReceiver) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// checkOrder verifies that msgs hold exactly want[sender] lines per sender
// prefix, each sender's in order ("<sender> <seq>").
func checkOrder(msgs []string, perSender map[string]int) error {
	next := map[string]int{}
	for _, m := range msgs {
		var sender string
		var seq int
		if _, err := fmt.Sscanf(m, "%s %d", &sender, &seq); err != nil {
			return fmt.Errorf("unexpected message %q", m)
		}
		if _, ok := perSender[sender]; !ok {
			return fmt.Errorf("message from unknown sender %q", m)
		}
		if seq != next[sender] {
			return fmt.Errorf("sender %s: got %d, want %d", sender, seq, next[sender])
		}
		next[sender]++
	}
	for s, n := range perSender {
		if next[s] != n {
			return fmt.Errorf("sender %s: received %d of %d", s, next[s], n)
		}
	}
	return nil
}

func lines(sender string, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%s %d\n", sender, i)
	}
	return b.String()
}

// sendRaw writes data to addr over a plain TCP connection, after a
// handshake line when channel is set, and closes.
func sendRaw(addr, channel, data string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if channel != "" {
		data = channel + "\n" + data
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, data); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	reply, _ := io.ReadAll(c)
	if channel != "" && string(reply) != "+OK\n" {
		return fmt.Errorf("reply %q", reply)
	}
	if channel == "" && len(reply) != 0 {
		return fmt.Errorf("reply %q", reply)
	}
	return nil
}

// relaySend runs `relay send addr [channel]` with data on stdin.
func relaySend(addr, channel, data string) error {
	args := []string{"send", addr}
	if channel != "" {
		args = append(args, channel)
	}
	cmd := exec.Command(relayBin, args...)
	cmd.Stdin = strings.NewReader(data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("relay send: %v: %s", err, out)
	}
	return nil
}

// httpGet fetches url on a fresh connection: an idle keep-alive connection
// would leave a goroutine in the server, and tests compare its goroutine
// count with a baseline.
func httpGet(url string) (string, error) {
	resp, err := noKeepAlive.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

var noKeepAlive = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// waitFanoutConnections waits until the fanout whose /metrics is at
// metricsURL counts want WebSocket clients.
func waitFanoutConnections(t *testing.T, metricsURL string, want int) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		if v := metricSum(scrape(metricsURL), "relay_fanout_connections"); v != float64(want) {
			return fmt.Errorf("fanout has %v watchers, want %d", v, want)
		}
		return nil
	})
}
