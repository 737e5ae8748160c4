package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// runBin runs the built relay binary with stdin and extra environment, and
// returns its stdout, stderr and exit status.
func runBin(t *testing.T, stdin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, relayBin, args...)
	cmd.Env = append(cmd.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("relay %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// TestHelpOnStdout: every subcommand answers -h, -help and --help with its
// usage on stdout and exit 0, and `relay help CMD` prints the same.
func TestHelpOnStdout(t *testing.T) {
	t.Parallel()
	for name := range commands {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var first string
			for _, args := range [][]string{{name, "-h"}, {name, "--help"}, {name, "-help"}, {"help", name}} {
				var out, errb bytes.Buffer
				if code := run(args, strings.NewReader(""), &out, &errb); code != 0 {
					t.Fatalf("relay %v: exit %d, stderr %q", args, code, errb.String())
				}
				if !strings.HasPrefix(out.String(), "usage: relay "+name) {
					t.Fatalf("relay %v: stdout does not start with the usage:\n%s", args, out.String())
				}
				if first == "" {
					first = out.String()
				} else if out.String() != first {
					t.Fatalf("relay %v prints another help than relay %s -h", args, name)
				}
			}
		})
	}
}

// TestRoleHelpListsVariables: `relay all|ingest|fanout --help` lists the
// variables of that role (as `relay config ROLE` does), instead of "takes
// no arguments".
func TestRoleHelpListsVariables(t *testing.T) {
	t.Parallel()
	for role, want := range map[string]string{"all": "RELAY_FANOUT_ADDR", "ingest": "RELAY_INGEST_LISTENERS", "fanout": "RELAY_FANOUT_ADDR"} {
		out, errb, code := runBin(t, "", nil, role, "--help")
		if code != 0 || !strings.Contains(out, "usage: relay "+role) || !strings.Contains(out, want) {
			t.Errorf("relay %s --help: exit %d, stdout:\n%s\nstderr:\n%s", role, code, out, errb)
		}
	}
}

// TestHealthHelpDoesNotFetch: `relay health -h` is help, not a URL.
func TestHealthHelpDoesNotFetch(t *testing.T) {
	t.Parallel()
	out, errb, code := runBin(t, "", nil, "health", "-h")
	if code != 0 || !strings.Contains(out, "usage: relay health") || errb != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errb)
	}
}

// TestFlagsAfterArguments: flags may follow positional arguments.
func TestFlagsAfterArguments(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"health", srv.URL, "--timeout", "20s"}, nil, &out, &errb); code != 0 || hits.Load() != 1 {
		t.Fatalf("relay health URL --timeout 20s: exit %d, %d requests, stderr %q", code, hits.Load(), errb.String())
	}
	// `--` ends the flags: what follows is an argument even if it looks like one.
	errb.Reset()
	if code := run([]string{"health", "--", "-h"}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "-h") {
		t.Fatalf("relay health -- -h: exit %d, stderr %q (want an attempt to GET \"-h\")", code, errb.String())
	}
}

// TestUsageErrorsNameTheProblem: a bad flag, a bad value, a negative count
// and extra arguments exit 2 with a line that names the flag or argument
// (and the allowed values), not a bare usage dump.
func TestUsageErrorsNameTheProblem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"send", "--framing", "lines", "127.0.0.1:1"}, []string{`"lines"`, "-framing", "line, len32, raw"}},
		{[]string{"send", "127.0.0.1:1", "ch", "extra"}, []string{`extra argument "extra"`}},
		{[]string{"send", "127.0.0.1:1", "--count", "-1"}, []string{"--count must be"}},
		{[]string{"send", "127.0.0.1:1", "--rate", "-5"}, []string{"--rate must be"}},
		{[]string{"send", "127.0.0.1:1", "--token", "t"}, []string{"--token needs CHANNEL"}},
		{[]string{"send", "127.0.0.1:1", "ch", "--count", "2", "--template", "{{.Nope}}"}, []string{"--template"}},
		{[]string{"send", "127.0.0.1:1", "ch", "--template", "a\nb"}, []string{"--template", "newline"}},
		{[]string{"send"}, []string{"want ADDR [CHANNEL]"}},
		{[]string{"watch", "-n", "-1", "ws://127.0.0.1:1/ws/a"}, []string{"-n must be"}},
		{[]string{"watch", "ws://127.0.0.1:1/ws/a", "--binary", "b32"}, []string{"-binary", "raw, hex, base64"}},
		{[]string{"watch", "ws://127.0.0.1:1/ws/a", "--bogus"}, []string{"flag provided but not defined: -bogus"}},
		{[]string{"watch", "ws://127.0.0.1:1/ws/a", "-n", "x"}, []string{`invalid value "x" for flag -n`}},
		{[]string{"watch", "127.0.0.1:1/ws/a"}, []string{"URL must look like"}},
		{[]string{"watch", "ws://127.0.0.1:1/ws/a", "ws://127.0.0.1:1/ws/b"}, []string{"extra argument"}},
		{[]string{"config", "ingest", "extra"}, []string{`extra argument "extra"`}},
		{[]string{"config", "sender"}, []string{"ROLE must be all, ingest or fanout"}},
		{[]string{"bench", "x"}, []string{`takes no arguments, got "x"`}},
		{[]string{"all", "x"}, []string{`takes no arguments, got "x"`}},
		{[]string{"health"}, []string{"want URL"}},
		{[]string{"health", "--timeout", "0s", "http://x"}, []string{"--timeout must be"}},
		{[]string{"version", "x"}, []string{`extra argument "x"`}},
		{[]string{"help", "nope"}, []string{`unknown command "nope"`}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			code := run(tt.args, strings.NewReader(""), &out, &errb)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr %q does not contain %q", errb.String(), w)
				}
			}
			if strings.Count(errb.String(), "\n") > 3 {
				t.Errorf("stderr is a usage dump, want a short reason:\n%s", errb.String())
			}
		})
	}
}
