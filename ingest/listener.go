package ingest

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/netguard"
	"github.com/relaydev/relay/shared/tcpproto"
)

// listener is one bound ADDR=CHANNEL/FRAMING entry.
type listener struct {
	net.Listener
	spec config.Listener
}

// acceptLoop accepts senders until the listener is closed. Temporary errors
// (e.g. out of file descriptors) back off from 10 ms doubling to 1 s instead
// of spinning, like nats-server's acceptError.
func (s *Server) acceptLoop(ln *listener) error {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			delay = max(10*time.Millisecond, min(2*delay, time.Second))
			s.log.Warn("ingest: accept failed; backing off", "addr", ln.Addr().String(), "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.m.ConnectionsTotal.Inc()
		// Address rules and per-address limits come before the global
		// slot, so one address cannot take every slot (a ;proxy
		// listener learns the client's address later, in secure).
		var release func()
		if !ln.spec.Proxy {
			var ok bool
			if release, ok = s.admit(nc, ln.spec, netguard.AddrOf(nc.RemoteAddr())); !ok {
				continue
			}
		}
		select {
		case s.slots <- struct{}{}:
		default:
			if release != nil {
				release()
			}
			s.refuse(nc, reasonTooManyConnections, "too many connections")
			continue
		}
		c := newSenderConn(s, nc, ln.spec)
		c.release = release
		if !s.track(c) {
			<-s.slots
			if release != nil {
				release()
			}
			s.refuse(nc, reasonShutdown, "server shutting down: 0 messages accepted")
			continue
		}
		go func() {
			defer func() { <-s.slots }()
			defer s.untrack(c)
			c.serve()
		}()
	}
}

// refuse answers a connection with -ERR and closes it. The write is small
// and bounded by a short deadline, in the accept loop. A sender that already
// wrote (a fixed listener's data, a pipelined handshake) would have its
// unread bytes answered with a TCP reset by a plain close, and the reset
// often discards the -ERR line before the sender reads it (seen from outside:
// 4 of 6 refusals lost with printf 'x\nhi\n' | nc). So the close lingers
// like senderConn.errLine's, in a goroutine of its own, but at most
// maxLingering at once: past that (a flood) it closes at once.
func (s *Server) refuse(nc net.Conn, reason metrics.IngestRefusal, msg string) {
	s.m.Refused.Inc(reason)
	s.logRefusal(reason, "ingest: sender refused", "remote", nc.RemoteAddr().String(), "reason", msg)
	nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := nc.Write(tcpproto.ErrLine(msg)); err != nil {
		nc.Close()
		return
	}
	select {
	case s.lingering <- struct{}{}:
		go func() {
			defer func() { <-s.lingering }()
			lingerClose(nc)
		}()
	default:
		nc.Close()
	}
}

// maxLingering bounds refuse's lingering closes in progress.
const maxLingering = 256

// lingerClose half-closes nc, discards what still arrives for a moment
// (bounded in time and bytes) and closes it.
func lingerClose(nc net.Conn) {
	defer nc.Close()
	if tc, ok := nc.(interface{ CloseWrite() error }); ok && tc.CloseWrite() == nil {
		nc.SetReadDeadline(time.Now().Add(lingerTime))
		io.Copy(io.Discard, io.LimitReader(nc, lingerBytes))
	}
}

// refuseClose is refuse without the -ERR line (TLS listeners before the handshake).
func (s *Server) refuseClose(nc net.Conn, reason metrics.IngestRefusal, msg string) {
	s.m.Refused.Inc(reason)
	s.logRefusal(reason, "ingest: sender refused", "remote", nc.RemoteAddr().String(), "reason", msg)
	nc.Close()
}
