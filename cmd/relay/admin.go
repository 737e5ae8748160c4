package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	rhealth "github.com/relaydev/relay/shared/health"
)

// admin serves /metrics, /healthz and /readyz (and /debug/pprof/ with
// RELAY_ADMIN_PPROF) on RELAY_ADMIN_ADDR, a port kept off the public
// Service: scrapes and probes do not share the users' address, rules and
// limits, and what a profile or a metric reveals stays inside.
type admin struct {
	ln  net.Listener
	srv *http.Server
	log *slog.Logger
}

// listenAdmin binds addr now, so a port in use fails the start.
func listenAdmin(addr string, log *slog.Logger) (*admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", addr, err)
	}
	return &admin{ln: ln, log: log}, nil
}

// serve starts serving: ready reports every tier's readiness (nil = ready).
func (a *admin) serve(metricsHandler http.Handler, pprofOn bool, ready ...func() error) {
	mux := http.NewServeMux()
	rhealth.New(ready...).Register(mux)
	mux.Handle("GET /metrics", metricsHandler)
	if pprofOn {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
	a.log.Info("admin listening", "addr", a.ln.Addr().String(), "pprof", pprofOn)
	go func() {
		if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin server failed", "err", err)
		}
	}()
}

// close stops the server (after the tiers: /readyz says 503 while they drain).
func (a *admin) close() {
	if a.srv == nil {
		a.ln.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a.srv.Shutdown(ctx)
}
