package fanout

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestOriginCheck(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) {
		o.Config.AllowedOrigins = []string{"allowed.example", "https://*.Trusted.example"}
	})
	any := startEnv(t, func(o *Options) { o.Config.AllowedOrigins = []string{"*"} })
	tests := []struct {
		name   string
		env    *env
		origin string // "self" = the server's own host
		status int    // 0 = upgrade succeeds
	}{
		{"no origin (not a browser)", e, "", 0},
		{"same origin", e, "self", 0},
		{"cross origin", e, "http://evil.example", http.StatusForbidden},
		{"allowed host", e, "http://allowed.example", 0},
		{"allowed host, other port", e, "http://allowed.example:8443", http.StatusForbidden},
		{"allowed scheme pattern", e, "https://app.trusted.example", 0},
		{"pattern with wrong scheme", e, "http://app.trusted.example", http.StatusForbidden},
		{"not a URL", e, "::", http.StatusForbidden},
		{"star allows any", any, "http://evil.example", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			switch tt.origin {
			case "":
			case "self":
				h.Set("Origin", "http://"+tt.env.srv.Addr().String())
			default:
				h.Set("Origin", tt.origin)
			}
			c, err := tt.env.tryDial("o", h)
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("upgrade refused: %v", err)
				}
				c.Close(websocket.StatusNormalClosure, "")
				return
			}
			if got := dialStatus(err); got != tt.status {
				t.Fatalf("got %v, want HTTP %d", err, tt.status)
			}
		})
	}
	if got := val(e.m.Refused.With(refusedBadOrigin)); got != 4 {
		t.Errorf("Refused{bad_origin} = %v, want 4", got)
	}
}

func TestBadChannelIs400(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	for _, ch := range []string{"a..b", ".a", "a.", "bad%20name", "x%2Fy", "star*", "gt%3E", strings.Repeat("c", 129)} {
		t.Run(ch, func(t *testing.T) {
			_, err := e.tryDial(ch, nil)
			if got := dialStatus(err); got != http.StatusBadRequest {
				t.Fatalf("got %v, want HTTP 400", err)
			}
		})
	}
	// A plain GET gets the same answer.
	resp, err := http.Get("http://" + e.srv.Addr().String() + "/ws/a..b")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain GET: %d, want 400", resp.StatusCode)
	}
	if got := val(e.m.Refused.With(refusedBadChannel)); got != 9 {
		t.Errorf("Refused{bad_channel} = %v, want 9", got)
	}
	if got := val(e.m.Subscriptions); got != 0 {
		t.Errorf("a refused channel was subscribed")
	}
}

func TestPlainGETIsNotUpgradedNorSubscribed(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	base := e.ns.NumSubscriptions()
	resp, err := http.Get("http://" + e.srv.Addr().String() + "/ws/fine")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("status %d, want 426", resp.StatusCode)
	}
	if got := e.ns.NumSubscriptions(); got != base {
		t.Errorf("a plain GET created a subscription")
	}
	if got := val(e.m.Refused.With(refusedBadRequest)); got != 1 {
		t.Errorf("Refused{bad_request} = %v", got)
	}
}

func TestMaxConnections(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) { o.Config.MaxConnections = 2 })
	first := e.dial("m", nil)
	_ = e.dial("n", nil)
	_, err := e.tryDial("m", nil)
	if got := dialStatus(err); got != http.StatusServiceUnavailable {
		t.Fatalf("3rd client: %v, want HTTP 503", err)
	}
	if got := val(e.m.Refused.With(refusedTooMany)); got != 1 {
		t.Errorf("Refused{too_many_connections} = %v", got)
	}
	first.Close(websocket.StatusNormalClosure, "")
	eventually(t, 10*time.Second, func() error {
		c, err := e.tryDial("m", nil)
		if err != nil {
			return err
		}
		c.CloseNow()
		return nil
	})
}

func TestIsUpgrade(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		conn, upgrade string
		want          bool
	}{
		{"Upgrade", "websocket", true},
		{"keep-alive, Upgrade", "WebSocket", true},
		{"keep-alive", "websocket", false},
		{"Upgrade", "h2c", false},
	} {
		r, _ := http.NewRequest("GET", "/ws/x", nil)
		r.Header.Set("Connection", tt.conn)
		r.Header.Set("Upgrade", tt.upgrade)
		if got := isUpgrade(r); got != tt.want {
			t.Errorf("%s", fmt.Sprintf("Connection %q Upgrade %q: %v, want %v", tt.conn, tt.upgrade, got, tt.want))
		}
	}
}
