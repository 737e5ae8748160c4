package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/shared/config"
)

// checkRoleListing checks out lists exactly the variables role reads and
// fits a 100-column terminal.
func checkRoleListing(t *testing.T, out string, role config.Role) {
	t.Helper()
	for _, v := range (config.Config{}).Vars() {
		listed := strings.Contains(out, "\n"+v.Name+"=")
		if listed != v.UsedBy(role) {
			t.Errorf("relay %s: %s listed = %v, but role reads it = %v", role, v.Name, listed, v.UsedBy(role))
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if len(line) > config.TerminalWidth {
			t.Errorf("relay %s: line of %d columns: %q", role, len(line), line)
		}
	}
}

// TestConfigRoleListsOnlyItsVariables: `relay config ROLE` and the variable
// list of `relay ROLE --help` show only what that role reads, wrapped for a
// 100-column terminal.
func TestConfigRoleListsOnlyItsVariables(t *testing.T) {
	t.Parallel()
	for _, role := range []config.Role{config.RoleAll, config.RoleIngest, config.RoleFanout} {
		var stdout, stderr bytes.Buffer
		if code := configCmd([]string{string(role)}, &stdout, &stderr); code != 0 {
			t.Fatalf("relay config %s: exit %d, stderr %s", role, code, stderr.String())
		}
		checkRoleListing(t, stdout.String(), role)

		var help bytes.Buffer
		printRoleVariables(&help, role)
		checkRoleListing(t, help.String(), role)
	}
	// Spot checks of what the tags say.
	var out bytes.Buffer
	printRoleVariables(&out, config.RoleIngest)
	if strings.Contains(out.String(), "RELAY_FANOUT_ADDR") || strings.Contains(out.String(), "RELAY_NATS_LISTEN") {
		t.Errorf("relay ingest lists fanout's or 'relay all''s variables:\n%s", out.String())
	}
	out.Reset()
	printRoleVariables(&out, config.RoleAll)
	if strings.Contains(out.String(), "RELAY_NATS_URL=") {
		t.Errorf("relay all lists RELAY_NATS_URL, which it ignores:\n%s", out.String())
	}
}

// TestConfigRefusesExtraArguments: a word after ROLE (or any with -markdown)
// is refused, naming it, with exit status 2 (flags may follow ROLE).
func TestConfigRefusesExtraArguments(t *testing.T) {
	t.Parallel()
	for args, want := range map[string]string{"ingest extra": "extra", "-markdown extra": "extra", "ingest -markdown": "ingest", "nope": "nope"} {
		var stdout, stderr bytes.Buffer
		if code := configCmd(strings.Fields(args), &stdout, &stderr); code != 2 {
			t.Errorf("relay config %v: exit %d, want 2", args, code)
		}
		if !strings.Contains(stderr.String(), `"`+want+`"`) {
			t.Errorf("relay config %v: stderr %q does not name %q", args, stderr.String(), want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := configCmd([]string{"-h"}, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "usage: relay config") {
		t.Errorf("relay config -h: exit %d, stdout %q", code, stdout.String())
	}
}

// TestConfigProblemsAtStart runs the built binary: listeners clashing on a
// port are a configuration error (exit 2, naming both) rather than a bind
// failure (exit 1); a mistyped variable is warned about, naming the one
// meant, both when the start fails and when it succeeds; a bad duration
// shows a valid one.
func TestConfigProblemsAtStart(t *testing.T) {
	t.Parallel()
	fixed, httpAddr := freePort(t), freePort(t)
	_, port, _ := strings.Cut(fixed, ":")
	p := startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=:" + port + "=default/line",
		"RELAY_FANOUT_ADDR=" + fixed, // 127.0.0.1:PORT overlaps :PORT
		"RELAY_INGEST_HTTP_ADDR=",
		"RELAY_INGEST_LISTENER=:1=x/line",
		"RELAY_SHUTDOWN_GRACE=20",
	}, "all")
	if code := p.wait(t, 30*time.Second); code != 2 {
		t.Fatalf("exit %d, want 2; stderr:\n%s", code, p.stderr.String())
	}
	for _, want := range []string{
		"RELAY_INGEST_LISTENERS entry :" + port + "=default/line and RELAY_FANOUT_ADDR=" + fixed + " both listen on port " + port,
		"did you mean RELAY_INGEST_LISTENERS?",
		`RELAY_SHUTDOWN_GRACE="20": not a duration: write a number with a unit, e.g. 30s, 1m30s`,
	} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, p.stderr.String())
		}
	}

	// A good configuration starts, with the warning in its log.
	ok := startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + fixed + "=default/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=",
		"RELAY_FANOUT_ADR=:1",
	}, "all")
	waitReady(t, "http://"+httpAddr+"/readyz")
	if !strings.Contains(ok.stderr.String(), `level=WARN msg="RELAY_FANOUT_ADR is not a relay variable and is ignored (did you mean RELAY_FANOUT_ADDR?)"`) {
		t.Errorf("no warning at start:\n%s", ok.stderr.String())
	}
}
