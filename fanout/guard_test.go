package fanout

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/pires/go-proxyproto"

	"github.com/relaydev/relay/shared/testutil"
)

// dialOpts opens a WebSocket with full control of source address, Host and
// headers; the connection is closed when the test ends.
type dialOpts struct {
	src    string // local source IP; "" = any
	host   string // Host header; "" = the server's address
	header http.Header
	tls    *tls.Config
}

func (e *env) dialWith(channel string, o dialOpts) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if o.src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(o.src)}
	}
	// The URL carries the Host to send; the dialer always reaches our server
	// (as a rebound DNS name would).
	server := e.srv.Addr().String()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, server)
		},
		TLSClientConfig: o.tls,
	}
	host := server
	if o.host != "" {
		host = o.host
	}
	url := "ws://" + host
	if o.tls != nil {
		url = "wss://" + host
	}
	c, resp, err := websocket.Dial(ctx, url+"/ws/"+channel, &websocket.DialOptions{HTTPHeader: o.header, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		if resp != nil {
			return nil, &dialError{status: resp.StatusCode, err: err}
		}
		return nil, err
	}
	e.t.Cleanup(func() { c.CloseNow() })
	return c, nil
}

// expectCloseCode reads until the server closes and checks its code.
func expectCloseCode(t *testing.T, c *websocket.Conn, code websocket.StatusCode, reason string) {
	t.Helper()
	_, err := readErr(c, 10*time.Second)
	var ce websocket.CloseError
	if !asCloseError(err, &ce) || ce.Code != code || ce.Reason != reason {
		t.Fatalf("closed with %v, want %d %q", err, code, reason)
	}
}

func asCloseError(err error, ce *websocket.CloseError) bool {
	if websocket.CloseStatus(err) == -1 {
		return false
	}
	for e := err; e != nil; {
		if c, ok := e.(websocket.CloseError); ok {
			*ce = c
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

// TestUnmaskedFrameClosesWith1002 is finding 3: a client frame without a
// mask breaks RFC 6455 and must be closed with 1002 and counted as a
// protocol error, not as the client closing.
func TestUnmaskedFrameClosesWith1002(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	for i, frame := range [][]byte{
		{0x81, 0x02, 'h', 'i'},           // unmasked text frame
		{0x81 | 0x40, 0x80, 0, 0, 0, 0},  // RSV1 without an extension
		{0x8b, 0x80, 0, 0, 0, 0},         // unknown opcode 0xb
		{0x89, 0xfe, 0, 200, 1, 2, 3, 4}, // ping longer than 125 bytes
	} {
		conn := rawUpgrade(t, e.srv.Addr().String(), "p")
		conn.Write(frame)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		code, err := readCloseFrame(conn)
		conn.Close()
		if err != nil || code != 1002 {
			t.Fatalf("frame %d: close code %d (%v), want 1002", i, code, err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := val(e.m.Disconnects.With(disconnectProtocolError)); got != 4 {
			return fmt.Errorf("Disconnects{protocol_error} = %v, want 4", got)
		}
		if got := val(e.m.Disconnects.With(disconnectClientClosed)); got != 0 {
			return fmt.Errorf("Disconnects{client_closed} = %v, want 0", got)
		}
		return nil
	})
}

// readCloseFrame reads server frames until a close frame and returns its code.
func readCloseFrame(r io.Reader) (int, error) {
	br := bufio.NewReader(r)
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return 0, err
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			var l [2]byte
			io.ReadFull(br, l[:])
			n = int(binary.BigEndian.Uint16(l[:]))
		case 127:
			var l [8]byte
			io.ReadFull(br, l[:])
			n = int(binary.BigEndian.Uint64(l[:]))
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			return 0, err
		}
		if h[0]&0x0f == 0x8 {
			if n < 2 {
				return 1005, nil
			}
			return int(binary.BigEndian.Uint16(payload)), nil
		}
	}
}

// TestDNSRebinding is finding 2: a page on evil.example whose name now
// resolves to 127.0.0.1 sends Host: evil.example and Origin:
// http://evil.example; they match, so same-origin alone let it read the
// relay. A loopback-only listener now answers only local names.
func TestDNSRebinding(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	_, port, _ := net.SplitHostPort(e.srv.Addr().String())
	named := startEnv(t, func(o *Options) { o.Config.AllowedHosts = []string{"relay.example", "*.relay.example"} })
	_, namedPort, _ := net.SplitHostPort(named.srv.Addr().String())
	tests := []struct {
		name         string
		env          *env
		host, origin string
		status       int
	}{
		{"rebound name, same origin", e, "evil.example:" + port, "http://evil.example:" + port, http.StatusForbidden},
		{"rebound name, no origin", e, "evil.example:" + port, "", http.StatusForbidden},
		{"loopback-looking name", e, "127.0.0.1.evil.example:" + port, "http://127.0.0.1.evil.example:" + port, http.StatusForbidden},
		{"localhost", e, "localhost:" + port, "http://localhost:" + port, 0},
		{"localhost, trailing dot", e, "localhost.:" + port, "", 0},
		{"sub.localhost", e, "app.localhost:" + port, "", 0},
		{"127.0.0.1", e, "127.0.0.1:" + port, "http://127.0.0.1:" + port, 0},
		{"127.0.0.2", e, "127.0.0.2:" + port, "", 0},
		{"same host, other scheme", e, "localhost:" + port, "https://localhost:" + port, http.StatusForbidden},
		{"configured host", named, "relay.example", "http://relay.example", 0},
		{"configured pattern", named, "eu.relay.example:" + namedPort, "", 0},
		{"configured, other name", named, "evil.example", "http://evil.example", http.StatusForbidden},
		{"configured, localhost not implied", named, "localhost:" + namedPort, "", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.origin != "" {
				h.Set("Origin", tt.origin)
			}
			c, err := tt.env.dialWith("r", dialOpts{host: tt.host, header: h})
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				c.Close(websocket.StatusNormalClosure, "")
				return
			}
			if got := dialStatus(err); got != tt.status {
				t.Fatalf("got %v, want HTTP %d", err, tt.status)
			}
		})
	}
	if got := val(e.m.Refused.With(refusedBadHost)); got != 3 {
		t.Errorf("Refused{bad_host} = %v, want 3", got)
	}
	// The demo page and metrics are behind the same check; health is not.
	for path, want := range map[string]int{"/": 403, "/healthz": 200} {
		req, _ := http.NewRequest("GET", "http://"+e.srv.Addr().String()+path, nil)
		req.Host = "evil.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s with Host evil.example: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestFanoutPerIPLimits(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) { o.Config.MaxConnectionsPerIP = 2 })
	for range 2 {
		if _, err := e.dialWith("a", dialOpts{src: "127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := e.dialWith("a", dialOpts{src: "127.0.0.1"})
	if err != nil {
		t.Fatalf("over the cap the upgrade still completes (then closes): %v", err)
	}
	expectCloseCode(t, c, StatusRateLimited, "rate limited")
	if _, err := e.dialWith("a", dialOpts{src: "127.0.0.2"}); err != nil {
		t.Fatalf("another address: %v", err)
	}
	if got := val(e.m.Refused.With(refusedTooManyFromIP)); got != 1 {
		t.Errorf("Refused{too_many_connections_per_ip} = %v, want 1", got)
	}

	r := startEnv(t, func(o *Options) { o.Config.ConnectRatePerIP = "2/1m" })
	for range 2 {
		c, err := r.dialWith("a", dialOpts{src: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		c.Close(websocket.StatusNormalClosure, "")
	}
	c, err = r.dialWith("a", dialOpts{src: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	expectCloseCode(t, c, StatusRateLimited, "rate limited")
	if got := val(r.m.Refused.With(refusedRateLimited)); got != 1 {
		t.Errorf("Refused{rate_limited} = %v, want 1", got)
	}
}

func TestFanoutCIDRRulesAndForwardedHeaders(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) {
		o.Config.AllowCIDRs = "127.0.0.0/8,198.51.100.0/24"
		o.Config.DenyCIDRs = "127.0.0.3/32,198.51.100.66"
		o.Config.TrustedProxies = "127.0.0.1/32"
	})
	xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }
	tests := []struct {
		name string
		o    dialOpts
		ok   bool
	}{
		{"allowed peer", dialOpts{src: "127.0.0.2"}, true},
		{"denied peer", dialOpts{src: "127.0.0.3"}, false},
		{"trusted proxy for an allowed client", dialOpts{src: "127.0.0.1", header: xff("198.51.100.7")}, true},
		{"trusted proxy for a denied client", dialOpts{src: "127.0.0.1", header: xff("198.51.100.66")}, false},
		{"trusted proxy for an outside client", dialOpts{src: "127.0.0.1", header: xff("203.0.113.1")}, false},
		{"forged hop left of the real one", dialOpts{src: "127.0.0.1", header: xff("198.51.100.7, 203.0.113.1")}, false},
		{"Forwarded header", dialOpts{src: "127.0.0.1", header: http.Header{"Forwarded": {`for="198.51.100.66:4711"`}}}, false},
		{"untrusted peer's header ignored", dialOpts{src: "127.0.0.3", header: xff("198.51.100.7")}, false},
		{"untrusted peer cannot dodge by header", dialOpts{src: "127.0.0.2", header: xff("198.51.100.66")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.dialWith("c", tt.o)
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && dialStatus(err) != http.StatusForbidden {
				t.Fatalf("got %v, want HTTP 403", err)
			}
		})
	}
	if got := val(e.m.Refused.With(refusedDenied)); got != 6 {
		t.Errorf("Refused{denied} = %v, want 6", got)
	}
}

// TestFanoutProxyProtocol: a trusted proxy's PROXY header names the
// client, whose per-address cap then applies.
func TestFanoutProxyProtocol(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) {
		o.Config.TrustedProxies = "127.0.0.1/32"
		o.Config.MaxConnectionsPerIP = 1
	})
	upgrade := func(client string) (int, error) {
		conn, err := net.DialTimeout("tcp", e.srv.Addr().String(), 5*time.Second)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		h := proxyproto.HeaderProxyFromAddrs(1, &net.TCPAddr{IP: net.ParseIP(client), Port: 5000}, conn.LocalAddr().(*net.TCPAddr))
		h.WriteTo(conn)
		io.WriteString(conn, "GET /ws/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			return resp.StatusCode, nil
		}
		return readCloseFrame(br)
	}
	done := make(chan struct{})
	first := make(chan error, 1)
	go func() { // holds 203.0.113.7's one slot
		conn, err := net.Dial("tcp", e.srv.Addr().String())
		if err != nil {
			first <- err
			return
		}
		defer conn.Close()
		h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5000}, conn.LocalAddr().(*net.TCPAddr))
		h.WriteTo(conn)
		io.WriteString(conn, "GET /ws/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		_, err = http.ReadResponse(bufio.NewReader(conn), nil)
		first <- err
		<-done
	}()
	defer close(done)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	code, err := upgrade("203.0.113.7")
	if err != nil || code != int(StatusRateLimited) {
		t.Fatalf("second connection of 203.0.113.7: %d %v, want close 4429", code, err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := e.srv.guard.limiter.Conns(mustAddr("203.0.113.7")); n != 1 {
			return fmt.Errorf("203.0.113.7 holds %d", n)
		}
		return nil
	})
}

func TestFanoutTLSAndRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldCA, newCA := testutil.NewCA(t, "old CA"), testutil.NewCA(t, "new CA")
	cert, key := oldCA.Issue(t, "fanout-old")
	e := startEnv(t, func(o *Options) {
		o.Config.TLSCertFile = testutil.WriteFile(t, dir, "tls.crt", cert)
		o.Config.TLSKeyFile = testutil.WriteFile(t, dir, "tls.key", key)
	})
	before, err := e.dialWith("t", dialOpts{tls: &tls.Config{RootCAs: oldCA.Pool()}, host: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	// Same origin over TLS means an https Origin.
	if _, err := e.dialWith("t", dialOpts{tls: &tls.Config{RootCAs: oldCA.Pool()}, header: http.Header{"Origin": {"http://" + e.srv.Addr().String()}}}); dialStatus(err) != 403 {
		t.Fatalf("http Origin on a wss request: %v, want 403", err)
	}
	if _, err := e.dialWith("t", dialOpts{tls: &tls.Config{RootCAs: oldCA.Pool()}, header: http.Header{"Origin": {"https://" + e.srv.Addr().String()}}}); err != nil {
		t.Fatalf("https Origin on a wss request: %v", err)
	}

	cert, key = newCA.Issue(t, "fanout-new")
	testutil.WriteFile(t, dir, "tls.key", key)
	testutil.WriteFile(t, dir, "tls.crt", cert)
	testutil.Eventually(t, 20*time.Second, func() error {
		c, err := tls.Dial("tcp", e.srv.Addr().String(), &tls.Config{RootCAs: newCA.Pool(), ServerName: "localhost"})
		if err != nil {
			return err
		}
		defer c.Close()
		if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "fanout-new" {
			return fmt.Errorf("certificate %s", cn)
		}
		return nil
	})
	e.publish("t", []byte("after rotation"))
	if _, b := read(t, before, 10*time.Second); string(b) != "after rotation" {
		t.Fatalf("connection opened before the rotation got %q", b)
	}
}

// TestSlowlorisFanout: connections that send part of a request header and
// stop are closed at ReadHeaderTimeout (±10%), each logged and counted, and
// the file descriptors and resident memory return to where they were. The
// first round warms the runtime up (Go keeps every goroutine descriptor it
// ever made, and pools buffers), so memory is judged on the second: a
// second wave of slow connections must leave nothing behind. Not parallel,
// so that the RSS readings are this test's alone.
func TestSlowlorisFanout(t *testing.T) {
	e := startEnv(t, nil)
	const n = 300
	slowRound(t, e, n, 1)
	fds, mem := openFDs(t), testutil.SettledMemory(t)
	peak := slowRound(t, e, n, 2)
	testutil.Eventually(t, 10*time.Second, func() error {
		if now := openFDs(t); now > fds {
			return fmt.Errorf("%d open file descriptors, %d before", now, fds)
		}
		return nil
	})
	testutil.MemoryBack(t, mem, peak, 1<<20)
}

// slowRound opens n connections that send half a request header, checks
// each is closed at ReadHeaderTimeout and counted, and returns the RSS
// measured while they were all open.
func slowRound(t *testing.T, e *env, n, round int) (peak testutil.Memory) {
	var opened sync.WaitGroup
	opened.Add(n)
	took := make(chan time.Duration, n)
	for range n {
		go func() {
			start := time.Now() // before the dial: the server's timer may start before Dial returns
			c, err := net.Dial("tcp", e.srv.Addr().String())
			if err != nil {
				opened.Done()
				took <- 0
				return
			}
			defer c.Close()
			io.WriteString(c, "GET /ws/s HTTP/1.1\r\nHost: localhost\r\n")
			opened.Done()
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			io.Copy(io.Discard, c)
			took <- time.Since(start)
		}()
	}
	opened.Wait()
	time.Sleep(500 * time.Millisecond) // let the server read the partial headers
	peak = testutil.SettledMemory(t)
	// Closing early would be a bug, so the lower bound is strict; the upper
	// bound allows 2 s for scheduling on a loaded 2-core machine under -race.
	var longest time.Duration
	for range n {
		d := <-took
		longest = max(longest, d)
		if d < readHeaderTimeout*9/10 || d > readHeaderTimeout*11/10+2*time.Second {
			t.Errorf("closed after %s; ReadHeaderTimeout %s ±10%%", d, readHeaderTimeout)
		}
	}
	t.Logf("round %d: %d slow-header connections closed after at most %s (ReadHeaderTimeout %s)", round, n, longest, readHeaderTimeout)
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := val(e.m.Refused.With(refusedHeaderTimeout)); got != float64(round*n) {
			return fmt.Errorf("Refused{header_timeout} = %v, want %d", got, round*n)
		}
		return nil
	})
	return peak
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(es)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
