// Package health serves /healthz and /readyz. Readiness fails (503) while the
// process drains or while its dependency check (NATS connected) fails, so a
// load balancer stops routing new clients here before shutdown begins.
package health

import (
	"errors"
	"net/http"
	"sync/atomic"
)

// ErrDraining is reported by /readyz once shutdown has begun.
var ErrDraining = errors.New("health: draining")

// Checker answers liveness and readiness.
type Checker struct {
	draining atomic.Bool
	checks   []func() error
}

// New returns a Checker that is ready while every check returns nil.
func New(checks ...func() error) *Checker { return &Checker{checks: checks} }

// SetDraining makes /readyz answer 503 from now on. Safe to call repeatedly.
func (c *Checker) SetDraining() { c.draining.Store(true) }

// Draining reports whether SetDraining was called.
func (c *Checker) Draining() bool { return c.draining.Load() }

// Ready returns nil when the process should receive traffic.
func (c *Checker) Ready() error {
	if c.draining.Load() {
		return ErrDraining
	}
	for _, check := range c.checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// Register adds /healthz and /readyz to mux.
func (c *Checker) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := c.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready: " + err.Error() + "\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
}
