package natsconn

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedOptions configure StartEmbedded.
type EmbeddedOptions struct {
	// Listen is host:port for NATS clients; empty serves in-process only.
	// Port 0 picks a free port (tests).
	Listen string
	// MaxPayload is the largest message the server accepts. Defaults to 1 MiB.
	MaxPayload int32
	// JetStreamDir, when set, enables JetStream with its file store in this
	// directory (created if missing): what is stored there survives a
	// restart of the process. Empty: no JetStream.
	JetStreamDir string
	Logger       *slog.Logger
}

// StartEmbedded starts a NATS server in this process and waits until it
// accepts connections.
func StartEmbedded(o EmbeddedOptions) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "relay-embedded",
		NoSigs:     true,
		MaxPayload: 1 << 20,
	}
	if o.MaxPayload > 0 {
		opts.MaxPayload = o.MaxPayload
	}
	if o.JetStreamDir != "" {
		opts.JetStream, opts.StoreDir = true, o.JetStreamDir
	}
	if o.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("natsconn: embedded listen %q: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("natsconn: embedded listen %q: bad port", o.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		} else {
			// nats-server reports a busy port only in its log; check first
			// so the start fails at once with a reason.
			l, err := net.Listen("tcp", o.Listen)
			if err != nil {
				return nil, fmt.Errorf("natsconn: embedded listen: %w", err)
			}
			l.Close()
		}
		opts.Host, opts.Port = host, p
		if host == "" {
			opts.Host = "0.0.0.0"
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsconn: embedded server: %w", err)
	}
	if o.Logger != nil {
		srv.SetLoggerV2(slogAdapter{o.Logger.With("component", "nats-server")}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		if o.JetStreamDir != "" && !srv.JetStreamEnabled() {
			return nil, fmt.Errorf("natsconn: embedded server: JetStream did not start with store %s (not writable, or in use by another process?)", o.JetStreamDir)
		}
		return nil, fmt.Errorf("natsconn: embedded server not ready (is %s in use?)", o.Listen)
	}
	if o.JetStreamDir != "" && !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, fmt.Errorf("natsconn: embedded server: JetStream did not start with store %s", o.JetStreamDir)
	}
	return srv, nil
}

// slogAdapter routes nats-server's logger to slog. Notices are debug-level:
// the embedded server is an implementation detail of `relay all`.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(f string, v ...any) { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Warnf(f string, v ...any)   { a.l.Warn(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Fatalf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Errorf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Debugf(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Tracef(f string, v ...any)  {}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}
