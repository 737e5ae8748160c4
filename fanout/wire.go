package fanout

import (
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/wsframe"
)

// accept upgrades r to a WebSocket owned by wsframe (its handshake, frames,
// writes and reads). A request that is not a valid handshake is answered
// with its HTTP status.
func (s *Server) accept(w http.ResponseWriter, r *http.Request) (*wsframe.Conn, error) {
	o := *acceptOptions
	o.WriteTimeout = s.cfg.WriteTimeout
	return wsframe.Accept(w, r, &o)
}

// unwatch drops the watchedConn wrapper at the upgrade: the header watch is
// done, and writes should reach the raw socket (writev). Under TLS the
// wrapper stays below the TLS connection.
func unwatch(c net.Conn) net.Conn {
	if wc, ok := c.(*watchedConn); ok {
		return wc.Conn
	}
	return c
}

// closeUpgraded completes the upgrade and closes at once with code and
// text: how a refusal reaches a browser, which cannot read the status of a
// refused upgrade. The client's close frame is awaited for the close grace
// at most.
func (s *Server) closeUpgraded(w http.ResponseWriter, r *http.Request, code websocket.StatusCode, text string) {
	conn, err := s.accept(w, r)
	if err != nil {
		return // answered, or the peer is gone
	}
	defer conn.Close()
	if conn.WriteClose(uint16(code), text) != nil {
		return
	}
	conn.AwaitClose(time.Now().Add(s.limits.closeGrace))
}
