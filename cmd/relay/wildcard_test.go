package main

import (
	"strings"
	"testing"
)

// TestWildcardEndToEnd runs the built binary with RELAY_AUTH=jwt: a token
// minted with --watch 'sensors.*' lets `relay watch --envelope` watch
// sensors.* (each line names its concrete channel) but not sensors.>
// (4403, exit 3); a resume parameter on a pattern is 4400 (exit 3); ingest
// refuses a pattern in a sender's handshake (senders name one channel).
func TestWildcardEndToEnd(t *testing.T) {
	t.Parallel()
	r := startAuthRelay(t)
	watchTok := r.mint(t, "--watch", "sensors.*", "--sub", "dash", "--ttl", "1h")
	sendTok := r.mint(t, "--send", ">", "--sub", "dev", "--ttl", "1h")
	env := []string{"RELAY_TOKEN=" + watchTok}

	_, errb, code := runBin(t, "", env, "watch", "--envelope", r.ws+"/ws/sensors.>")
	if code != 3 || !strings.Contains(errb, "4403") {
		t.Errorf("watch sensors.> with a sensors.* token: exit %d, stderr %q; want 3 and 4403", code, errb)
	}
	_, errb, code = runBin(t, "", env, "watch", "--envelope", r.ws+"/ws/sensors.*?since=3")
	if code != 3 || !strings.Contains(errb, "4400") {
		t.Errorf("watch sensors.*?since=3: exit %d, stderr %q; want 3 and 4400", code, errb)
	}

	w := startWatch(t, env, "--envelope", "-n", "2", r.ws+"/ws/sensors.*")
	waitFanoutConnections(t, r.base+"/metrics", 1)
	for _, s := range []struct{ channel, data string }{{"sensors.a", "one"}, {"other.a", "no"}, {"sensors.b", "two"}} {
		if reply, _, _ := r.handshake(t, s.channel+" "+sendTok, s.data+"\n"); reply != "+OK" {
			t.Fatalf("handshake %s: %q", s.channel, reply)
		}
	}
	if code := w.wait(t); code != 0 {
		t.Fatalf("relay watch exit %d: %s", code, w.stderr.String())
	}
	if got, want := w.stdout.String(), "sensors.a\t-\tone\nsensors.b\t-\ttwo\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}

	if reply, _, _ := r.handshake(t, "sensors.* "+sendTok, "x\n"); !strings.HasPrefix(reply, "-ERR bad handshake") {
		t.Errorf("a pattern as a sender's channel: %q, want -ERR bad handshake", reply)
	}
}
