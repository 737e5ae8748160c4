package health

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func get(t *testing.T, mux *http.ServeMux, path string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	var depErr error
	c := New(func() error { return depErr })
	mux := http.NewServeMux()
	c.Register(mux)

	if code := get(t, mux, "/readyz"); code != 200 {
		t.Fatalf("/readyz = %d, want 200", code)
	}
	depErr = errors.New("nats down")
	if code := get(t, mux, "/readyz"); code != 503 {
		t.Fatalf("/readyz with dependency down = %d, want 503", code)
	}
	depErr = nil
	c.SetDraining()
	c.SetDraining() // idempotent
	if code := get(t, mux, "/readyz"); code != 503 || !errors.Is(c.Ready(), ErrDraining) {
		t.Fatalf("/readyz while draining = %d (%v), want 503", code, c.Ready())
	}
	if code := get(t, mux, "/healthz"); code != 200 {
		t.Fatalf("/healthz while draining = %d, want 200 (alive)", code)
	}
}
