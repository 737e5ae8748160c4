package main

// Helpers for the fault tests (failover_test.go, toxiproxy_test.go): senders
// that write numbered lines at a steady rate and keep what the server
// answers, a gap check per sender, and readings of a relay process's
// /metrics and of the NATS nodes' client lists.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
)

// seqWidth is the width of a line's number: fixed, so a line cut short is
// recognised as such instead of reading as a smaller number.
const seqWidth = 8

// numberedSender writes "<name> <seq>\n" lines (seq from 0, fixed width) to
// an ingest handshake listener at a steady rate, and keeps every byte the
// server writes back (+OK, then any -ERR).
type numberedSender struct {
	name    string
	conn    net.Conn
	rate    int // lines per second
	written atomic.Int64
	stopped atomic.Bool
	wrote   chan struct{} // the writer has ended
	replied chan struct{} // the server closed its side (or the read failed)

	mu       sync.Mutex
	reply    strings.Builder
	writeErr error
	errAt    time.Time // when the first -ERR arrived
}

// startNumberedSender connects to addr, names channel and starts writing.
func startNumberedSender(t *testing.T, addr, channel, name string, rate int) *numberedSender {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("sender %s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, channel+"\n"); err != nil {
		t.Fatalf("sender %s: %v", name, err)
	}
	if ok, err := br.ReadString('\n'); err != nil || ok != "+OK\n" {
		t.Fatalf("sender %s: handshake reply %q, %v", name, ok, err)
	}
	conn.SetDeadline(time.Time{})
	s := &numberedSender{name: name, conn: conn, rate: rate, wrote: make(chan struct{}), replied: make(chan struct{})}
	go s.readReplies(br)
	go s.write()
	return s
}

func (s *numberedSender) readReplies(br *bufio.Reader) {
	defer close(s.replied)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			s.mu.Lock()
			if s.errAt.IsZero() && strings.HasPrefix(line, "-ERR") {
				s.errAt = time.Now()
			}
			s.reply.WriteString(line)
			s.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (s *numberedSender) write() {
	defer close(s.wrote)
	start := time.Now()
	var buf []byte
	var seq int64
	for !s.stopped.Load() {
		due := int64(time.Since(start).Seconds()*float64(s.rate)) + 1
		buf = buf[:0]
		for i := seq; i < due; i++ {
			buf = fmt.Appendf(buf, "%s %0*d\n", s.name, seqWidth, i)
		}
		if len(buf) > 0 {
			// A generous deadline: backpressure while NATS is away is
			// expected and must not end the sender; a stall this long is
			// a failure of its own.
			s.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
			n, err := s.conn.Write(buf)
			// Count whole lines only.
			s.written.Add(int64(strings.Count(string(buf[:n]), "\n")))
			if err != nil {
				s.mu.Lock()
				s.writeErr = err
				s.mu.Unlock()
				return
			}
			seq = due
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// finish stops writing, closes the sending side and waits for the server
// to close its side; it returns what the server wrote after +OK.
func (s *numberedSender) finish(t *testing.T) string {
	t.Helper()
	s.stopped.Store(true)
	<-s.wrote
	if tc, ok := s.conn.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	select {
	case <-s.replied:
	case <-time.After(30 * time.Second):
		t.Errorf("sender %s: server did not close the connection within 30s of the sender's EOF", s.name)
	}
	return s.replyText()
}

func (s *numberedSender) replyText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reply.String()
}

// refused reports whether the server told this sender it did not take
// everything (an -ERR line), or a write failed.
func (s *numberedSender) refused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Contains(s.reply.String(), "-ERR") || s.writeErr != nil
}

// gapFree checks that msgs hold, for every sender, numbers 0, 1, 2, ...
// with none missing, repeated or cut short, and returns how many each
// sender has. (A watcher connected before the senders started must see
// each one from 0.)
func gapFree(msgs []string) (map[string]int64, error) {
	next := map[string]int64{}
	for _, m := range msgs {
		name, num, ok := strings.Cut(m, " ")
		if !ok || len(num) != seqWidth {
			return next, fmt.Errorf("malformed or cut line %q", m)
		}
		seq, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return next, fmt.Errorf("malformed line %q", m)
		}
		if seq != next[name] {
			return next, fmt.Errorf("sender %s: got %d after %d: %d missing (a silent gap)", name, seq, next[name]-1, seq-next[name])
		}
		next[name]++
	}
	return next, nil
}

// metricSum returns the value of the sample whose name and labels start
// with series (e.g. `relay_nats_events_total{tier="fanout",event="reconnect"`
// — label order as the exposition prints it), summed over matches; 0 when
// absent.
func metricSum(body, series string) float64 {
	var sum float64
	for line := range strings.SplitSeq(body, "\n") {
		if !strings.HasPrefix(line, series) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(series):]
		if rest != "" && rest[0] != ' ' && rest[0] != '{' && rest[0] != ',' && rest[0] != '}' {
			continue // a longer metric name
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// scrape fetches a /metrics page; "" when it cannot.
func scrape(url string) string {
	body, err := httpGet(url)
	if err != nil {
		return ""
	}
	return body
}

// readyStatus is the HTTP status of GET url (0 when it cannot connect).
func readyStatus(url string) int {
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// nodeOf returns the index of the node on which a client whose connection
// name starts with prefix is connected, or -1. Nodes that are shut down
// are skipped.
func nodeOf(nodes []*server.Server, prefix string) int {
	for i, s := range nodes {
		if !s.Running() {
			continue
		}
		cz, err := s.Connz(&server.ConnzOptions{})
		if err != nil {
			continue
		}
		for _, c := range cz.Conns {
			if strings.HasPrefix(c.Name, prefix) {
				return i
			}
		}
	}
	return -1
}

// testWatcher is a wsReceiver the test can also close itself.
type testWatcher struct {
	*wsReceiver
	conn *websocket.Conn
}

// dialWatcher is dialWS keeping the connection, for close.
func dialWatcher(t *testing.T, url string) *testWatcher {
	t.Helper()
	r, c := dialWSOpts(t, url, nil)
	return &testWatcher{wsReceiver: r, conn: c}
}

// close ends the connection from the client's side and waits for the
// reader to stop.
func (w *testWatcher) close() {
	w.conn.CloseNow()
	<-w.closed
}
