package fanout

import (
	"context"
	"errors"
	"testing"
	"time"
)

// An idle client's writer goroutine ends after writerLinger and a new
// message starts one again: nothing is lost or reordered across the gap.
func TestWriterEndsWhenIdleAndRestarts(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	c := e.dial("idle", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	read := func(want string) {
		t.Helper()
		_, got, err := c.Read(ctx)
		if err != nil || string(got) != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	writing := func() error {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		for cl := range e.srv.clients {
			cl.mu.Lock()
			w := cl.writing
			cl.mu.Unlock()
			if w {
				return errors.New("writer still running")
			}
		}
		return nil
	}
	for round := range 2 {
		for _, m := range []string{"a", "b", "c"} {
			if err := e.pub.Publish("relay.ch.idle", []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range []string{"a", "b", "c"} {
			read(m)
		}
		eventually(t, writerLinger+5*time.Second, writing)
		t.Logf("round %d: writer ended while idle", round)
	}
}
