package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/relaydev/relay/fanout"
	"github.com/relaydev/relay/ingest"
	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/durable"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/natsconn"
)

// serve runs `relay all|ingest|fanout`: load and validate the config once,
// start what the role needs, run until SIGINT/SIGTERM, shut down in order.
func serve(roleName string, args []string, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "relay %s: takes no arguments (configure with RELAY_* variables; see 'relay config')\n", roleName)
		return 2
	}
	role := config.Role(roleName)
	cfg, err := loadConfig(role)
	if err != nil {
		for _, w := range unknownVariables() {
			fmt.Fprintf(stderr, "relay %s: warning: %s\n", role, w)
		}
		fmt.Fprintf(stderr, "relay %s: %v\n", role, err)
		return 2
	}
	log := newLogger(cfg, stderr)
	for _, w := range unknownVariables() {
		log.Warn(w)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A second signal during shutdown gets the default behaviour: exit now.
	go func() { <-ctx.Done(); stop() }()

	if err := runRole(ctx, role, cfg, log); err != nil {
		fmt.Fprintf(stderr, "relay %s: %v\n", role, err)
		return 1
	}
	return 0
}

// runRole starts the role's parts and blocks until they have shut down.
func runRole(ctx context.Context, role config.Role, cfg config.Config, log *slog.Logger) error {
	return runRoleNotify(ctx, role, cfg, log, nil)
}

// started tells an in-process caller (relay bench) where the parts of a
// role listen, once all of them are bound. A part the role does not run is
// left zero.
type started struct {
	NATS       *server.Server // the embedded server of 'relay all'
	IngestAddr []net.Addr     // in RELAY_INGEST_LISTENERS order
	FanoutAddr net.Addr
	Registry   *metrics.Registry // every metric the role serves on /metrics
	AdminAddr  net.Addr          // RELAY_ADMIN_ADDR's listener, when set
}

// runRoleNotify is runRole that calls notify (when not nil) once every
// part is listening, before it blocks.
func runRoleNotify(ctx context.Context, role config.Role, cfg config.Config, log *slog.Logger, notify func(started)) error {
	var info started
	reg := metrics.New()
	stream, err := durable.New(cfg.SubjectPrefix, cfg.Durable)
	if err != nil {
		return err
	}
	authn, err := newAuthenticator(cfg, log)
	if err != nil {
		return err
	}
	warnOpen(role, cfg, log)
	switch role {
	case config.RoleIngest:
		reg.KeepTiers("ingest")
	case config.RoleFanout:
		reg.KeepTiers("fanout")
	}
	info.Registry = reg
	connectOpts := natsconn.Options{
		RetryWindow:  cfg.NATSRetry,
		Logger:       log,
		PingInterval: cfg.NATSPingInterval,
		MaxPingsOut:  cfg.NATSMaxPings,
		Auth: natsconn.Auth{
			CredsFile: cfg.NATSCredsFile, NkeySeedFile: cfg.NATSNkeySeedFile, User: cfg.NATSUser,
			PasswordFile: cfg.NATSPasswordFile, TokenFile: cfg.NATSTokenFile,
			TLSCAFile: cfg.NATSTLSCAFile, TLSCertFile: cfg.NATSTLSCertFile, TLSKeyFile: cfg.NATSTLSKeyFile,
		},
	}
	// With RELAY_ADMIN_ADDR, metrics and health move there, off the public ports.
	var adm *admin
	publicMetrics := reg.Handler()
	if cfg.AdminAddr != "" {
		var err error
		if adm, err = listenAdmin(cfg.AdminAddr, log); err != nil {
			return err
		}
		defer adm.close()
		publicMetrics = nil
	}
	var readiness []func() error
	var embedded *server.Server
	if role == config.RoleAll {
		eo := natsconn.EmbeddedOptions{
			Listen:     cfg.EmbeddedListen,
			MaxPayload: int32(max(1<<20, cfg.MaxMessage+1024)),
			Logger:     log,
		}
		if stream.Enabled() {
			eo.JetStreamDir = cfg.DataDir
		}
		embedded, err = natsconn.StartEmbedded(eo)
		if err != nil {
			return err
		}
		defer func() { embedded.Shutdown(); embedded.WaitForShutdown() }()
		if cfg.EmbeddedListen != "" {
			log.Info("embedded NATS listening", "url", embedded.ClientURL())
		}
		if stream.Enabled() {
			log.Info("embedded NATS runs JetStream", "store", embedded.StoreDir())
		}
		connectOpts.InProcess = embedded
		info.NATS = embedded
	} else {
		connectOpts.URLs, _ = cfg.NATSURLs()
	}

	// Each tier has its own NATS connection: a slow fanout subscription
	// must never hold up ingest's publishes, and each drains on its own.
	connect := func(tier string) (*nats.Conn, error) {
		o := connectOpts
		o.Name = "relay-" + tier + "-" + hostname()
		o.Logger = log.With("tier", tier)
		events := metrics.NATSEvents(tier)
		o.OnEvent = events.Inc
		// Ingest accepts only what NATS takes: no reconnect buffer to be
		// replayed as a burst after an outage (see ingest's publish).
		o.NoReconnectBuffer = tier == "ingest"
		nc, err := natsconn.Connect(ctx, o)
		if err != nil {
			return nil, err
		}
		reg.MustRegister(events.Collector(), metrics.NATSConnected(tier, func() float64 {
			if nc.IsConnected() {
				return 1
			}
			return 0
		}))
		return nc, nil
	}

	// Run as an errgroup: the first tier to fail cancels the others, and
	// every tier shuts down within the grace period.
	g, gctx := errgroup.WithContext(ctx)
	var finished atomic.Bool
	var handshakePort string
	// In 'relay all' the fanout closes its clients only after ingest has
	// published (and NATS confirmed) what its senders wrote before the signal.
	var ingestDrained <-chan struct{}

	if role == config.RoleAll || role == config.RoleIngest {
		nc, err := connect("ingest")
		if err != nil {
			return err
		}
		if err := ensureStream(ctx, stream, nc, cfg.NATSRetry, log); err != nil {
			nc.Close()
			return err
		}
		ing, err := ingest.New(ingest.Options{
			Config:         cfg.Ingest,
			SubjectPrefix:  cfg.SubjectPrefix,
			ShutdownGrace:  cfg.ShutdownGrace,
			NATS:           nc,
			Logger:         log.With("tier", "ingest"),
			Metrics:        reg.Ingest,
			MetricsHandler: publicMetrics,
			Durable:        stream,
			Auth:           authn,
			Control:        cfg.Control(),
		})
		if err != nil {
			nc.Close()
			return err
		}
		reg.MustRegister(metrics.MaxConnections("ingest", cfg.Ingest.MaxConnections))
		info.IngestAddr = ing.Addrs()
		ingestDrained = ing.Drained()
		for i, l := range cfg.Listeners {
			readiness = append(readiness, ing.Ready)
			if l.Handshake() && handshakePort == "" {
				handshakePort = strconv.Itoa(port(ing.Addrs()[i]))
			}
		}
		g.Go(func() error { return ing.Run(gctx) })
	}

	if role == config.RoleAll || role == config.RoleFanout {
		nc, err := connect("fanout")
		if err != nil {
			return errors.Join(err, abort(g, &finished))
		}
		if role == config.RoleFanout {
			if err := ensureStream(ctx, stream, nc, cfg.NATSRetry, log); err != nil {
				nc.Close()
				return err
			}
		}
		fcfg := cfg.Fanout
		if fcfg.PublicIngestAddr == "" && handshakePort != "" {
			// Same process: senders reach ingest on this host.
			fcfg.PublicIngestAddr = ":" + handshakePort
		}
		fan, err := fanout.New(fanout.Options{
			Config:         fcfg,
			SubjectPrefix:  cfg.SubjectPrefix,
			ShutdownGrace:  cfg.ShutdownGrace,
			NATS:           nc,
			Logger:         log.With("tier", "fanout"),
			Metrics:        reg.Fanout,
			MetricsHandler: publicMetrics,
			NoHealthRoutes: adm != nil,
			Upstream:       ingestDrained,
			Auth:           authn,
			AuthCookie:     cfg.Cookie,
			QueryToken:     cfg.QueryToken,
			Durable:        stream,
			DurableRing:    cfg.DurableRing,
			Control:        cfg.Control(),
		})
		if err != nil {
			nc.Close()
			return errors.Join(err, abort(g, &finished))
		}
		reg.MustRegister(metrics.MaxConnections("fanout", fcfg.MaxConnections))
		info.FanoutAddr = fan.Addr()
		readiness = append(readiness, fan.Ready)
		g.Go(func() error { return fan.Run(gctx) })
	}
	if adm != nil {
		adm.serve(reg.Handler(), cfg.AdminPprof, readiness...)
		info.AdminAddr = adm.ln.Addr()
	}
	log.Info("relay started", "role", string(role))
	if role == config.RoleAll {
		// The first thing a new user wants to know: where to look, how to send.
		for i, l := range cfg.Listeners {
			if !l.Handshake() {
				scheme := "http"
				if cfg.Fanout.TLSCertFile != "" {
					scheme = "https"
				}
				log.Info("try it", "open", fmt.Sprintf("%s://localhost:%d/?channel=%s", scheme, port(info.FanoutAddr), l.Channel),
					"send", fmt.Sprintf("echo hello | nc -q1 localhost %d", port(info.IngestAddr[i])))
				break
			}
		}
	}
	if notify != nil {
		notify(info)
	}

	// Belt and braces: whatever a tier does, the process exits soon after
	// the grace period. (The watchdog ends with the tiers, so an in-process
	// caller such as relay bench leaves no goroutine behind.)
	waited := make(chan struct{})
	go func() {
		select {
		case <-gctx.Done():
		case <-waited:
			return
		}
		t := time.NewTimer(cfg.ShutdownGrace + 5*time.Second)
		defer t.Stop()
		select {
		case <-t.C:
		case <-waited:
			return
		}
		if !finished.Load() {
			log.Error("shutdown exceeded the grace period; exiting", "grace", cfg.ShutdownGrace)
			os.Exit(1)
		}
	}()
	err = g.Wait()
	finished.Store(true)
	close(waited)
	if err != nil {
		return err
	}
	log.Info("relay stopped")
	return nil
}

// ensureStream makes the durable channels' stream exist with the configured
// subjects and limits (nothing to do without durable channels). A NATS
// cluster still electing its JetStream leader answers with errors for a
// while, so it retries within the NATS retry window.
func ensureStream(ctx context.Context, stream *durable.Stream, nc *nats.Conn, window time.Duration, log *slog.Logger) error {
	if !stream.Enabled() {
		return nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("durable channels: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, max(window, 5*time.Second))
	defer cancel()
	wait := 250 * time.Millisecond
	for {
		_, err := stream.Ensure(ctx, js, log)
		if err == nil {
			return nil
		}
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("durable channels (RELAY_DURABLE_CHANNELS) need JetStream, which the NATS server does not run: %w", err)
		}
		log.Warn("durable: stream not ready yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			if errors.Is(err, nats.ErrNoResponders) {
				return fmt.Errorf("durable channels (RELAY_DURABLE_CHANNELS) need JetStream; nothing answered the JetStream API (is JetStream enabled on the NATS servers?): %w", err)
			}
			return fmt.Errorf("durable channels: %w", err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// abort stops tiers already started when a later one fails to start.
func abort(g *errgroup.Group, done *atomic.Bool) error {
	g.Go(func() error { return errStartFailed })
	err := g.Wait()
	done.Store(true)
	if errors.Is(err, errStartFailed) {
		return nil
	}
	return err
}

var errStartFailed = errors.New("start failed")

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

func port(a net.Addr) int {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.Port
	}
	return 0
}
