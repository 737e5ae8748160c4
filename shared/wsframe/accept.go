package wsframe

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// GUID is RFC 6455's Sec-WebSocket-Accept suffix.
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey is the Sec-WebSocket-Accept value for a Sec-WebSocket-Key.
func AcceptKey(key string) string {
	sum := sha1.Sum([]byte(key + GUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// ErrHandshake is returned (wrapped, with the reason) by Accept for a
// request that is not a valid opening handshake; Accept has answered it.
var ErrHandshake = errors.New("wsframe: bad handshake")

// AcceptOptions configure Accept.
type AcceptOptions struct {
	// Subprotocols the server speaks, in its order of preference; the one
	// selected is echoed as the client spelled it.
	Subprotocols []string
	// WriteTimeout bounds every write on the connection; 0 means 10s.
	WriteTimeout time.Duration
	// Unwrap, if set, is given the hijacked connection and returns the one
	// to keep: a wrapper that only watched the request headers can be
	// dropped, so that writes reach the socket itself (writev).
	Unwrap func(net.Conn) net.Conn
}

// Accept completes a client's opening handshake (RFC 6455 4.2.2) and takes
// the connection over from net/http. A request that is not a handshake is
// answered with the status coder/websocket gives it (426 without the
// upgrade headers, 405 for a method other than GET, 400 for a bad version
// or key) and ErrHandshake is returned. The Origin is not checked here: the
// caller does, so that a refusal is counted and logged. No extension is
// negotiated, so frames are never compressed and RSV bits never set.
//
// After Accept the handler may return: the Conn holds no reference to the
// request or to net/http's buffers.
func Accept(w http.ResponseWriter, r *http.Request, o *AcceptOptions) (*Conn, error) {
	if o == nil {
		o = &AcceptOptions{}
	}
	if status, err := verifyHandshake(w, r); err != nil {
		http.Error(w, err.Error(), status)
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	h := w.Header()
	h.Set("Upgrade", "websocket")
	h.Set("Connection", "Upgrade")
	h.Set("Sec-WebSocket-Accept", AcceptKey(strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key"))))
	proto := selectSubprotocol(r, o.Subprotocols)
	if proto != "" {
		h.Set("Sec-WebSocket-Protocol", proto)
	}
	w.WriteHeader(http.StatusSwitchingProtocols)
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return nil, fmt.Errorf("wsframe: hijack: %w", err)
	}
	// net/http holds the 101 in its writer until it is flushed.
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("wsframe: send 101: %w", err)
	}
	// The request header deadline set by http.Server must not end a
	// WebSocket that lives for hours; writes get their deadline per write.
	if err := nc.SetReadDeadline(time.Time{}); err != nil {
		nc.Close()
		return nil, fmt.Errorf("wsframe: %w", err)
	}
	if o.Unwrap != nil {
		nc = o.Unwrap(nc)
	}
	c := newConn(nc, o.WriteTimeout)
	c.subprotocol = proto
	// A client may have sent frames right behind its request; net/http's
	// reader holds them. They are copied so that its 4 KiB buffer is freed.
	if n := brw.Reader.Buffered(); n > 0 {
		c.pending = make([]byte, n)
		_, _ = brw.Reader.Read(c.pending)
	}
	return c, nil
}

// verifyHandshake checks r as coder/websocket's Accept does, with its
// statuses, so clients see no difference.
func verifyHandshake(w http.ResponseWriter, r *http.Request) (int, error) {
	if !r.ProtoAtLeast(1, 1) {
		return http.StatusUpgradeRequired, fmt.Errorf("WebSocket protocol violation: handshake request must be at least HTTP/1.1: %q", r.Proto)
	}
	if !HeaderHasToken(r.Header, "Connection", "upgrade") {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		return http.StatusUpgradeRequired, fmt.Errorf("WebSocket protocol violation: Connection header %q does not contain Upgrade", r.Header.Get("Connection"))
	}
	if !HeaderHasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		return http.StatusUpgradeRequired, fmt.Errorf("WebSocket protocol violation: Upgrade header %q does not contain websocket", r.Header.Get("Upgrade"))
	}
	if r.Method != http.MethodGet {
		return http.StatusMethodNotAllowed, fmt.Errorf("WebSocket protocol violation: handshake request method is not GET but %q", r.Method)
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		return http.StatusBadRequest, fmt.Errorf("unsupported WebSocket protocol version (only 13 is supported): %q", r.Header.Get("Sec-WebSocket-Version"))
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return http.StatusBadRequest, errors.New("WebSocket protocol violation: exactly one Sec-WebSocket-Key is required")
	}
	key := strings.TrimSpace(keys[0])
	if v, err := base64.StdEncoding.DecodeString(key); err != nil || len(v) != 16 {
		return http.StatusBadRequest, fmt.Errorf("WebSocket protocol violation: invalid Sec-WebSocket-Key %q, must be a 16 byte base64 encoded string", key)
	}
	return 0, nil
}

// selectSubprotocol returns the first of the server's subprotocols that the
// client offers, as the client spelled it.
func selectSubprotocol(r *http.Request, supported []string) string {
	for _, sp := range supported {
		for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
			for t := range strings.SplitSeq(v, ",") {
				if t = strings.TrimSpace(t); strings.EqualFold(sp, t) {
					return t
				}
			}
		}
	}
	return ""
}

// HeaderHasToken reports whether the comma-separated header key holds token
// (case-insensitive), as Connection: keep-alive, Upgrade does "upgrade".
func HeaderHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
