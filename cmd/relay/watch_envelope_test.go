package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWatchEnvelope: the built binary with --envelope on a pattern prints
// each message's concrete channel and seq ("-" on a core channel) before
// its payload, tab-separated, binary per --binary.
func TestWatchEnvelope(t *testing.T) {
	t.Parallel()
	r := startAll(t)
	w := startWatch(t, nil, "--envelope", "--binary", "hex", "-n", "3", "ws://"+r.http+"/ws/env.>")
	waitClients(t, r.http, 1)
	for _, s := range []struct{ channel, data string }{{"env.a", "hello there"}, {"env.b.c", "tab\there"}, {"other", "not me"}} {
		if _, errb, code := runBin(t, s.data+"\n", nil, "send", r.hs, s.channel); code != 0 {
			t.Fatal(errb)
		}
	}
	if _, errb, code := runBin(t, "", nil, "send", r.hsLen32, "env.a", "--framing", "len32", "--template", "\x01\xff"); code != 0 {
		t.Fatal(errb)
	}
	if code := w.wait(t); code != 0 {
		t.Fatalf("exit %d, stderr %s", code, w.stderr.String())
	}
	want := "env.a\t-\thello there\nenv.b.c\t-\ttab\there\nenv.a\t-\t01ff\n"
	if got := w.stdout.String(); got != want {
		t.Fatalf("stdout\n%q\nwant\n%q", got, want)
	}
}

// TestWatchEnvelopeJSON: --envelope --json adds channel (and seq on a
// durable channel) to each object, with the server's time.
func TestWatchEnvelopeJSON(t *testing.T) {
	t.Parallel()
	r := startAll(t)
	before := time.Now()
	w := startWatch(t, nil, "--envelope", "--json", "-n", "2", "ws://"+r.http+"/ws/ej.*")
	waitClients(t, r.http, 1)
	if _, errb, code := runBin(t, "héllo\n", nil, "send", r.hs, "ej.one"); code != 0 {
		t.Fatal(errb)
	}
	if _, errb, code := runBin(t, "", nil, "send", r.hsLen32, "ej.two", "--framing", "len32", "--template", "two\nlines\xff"); code != 0 {
		t.Fatal(errb)
	}
	if code := w.wait(t); code != 0 {
		t.Fatalf("exit %d, stderr %s", code, w.stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(w.stdout.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", w.stdout.String())
	}
	type line struct {
		Time    string  `json:"time"`
		Channel string  `json:"channel"`
		Seq     *uint64 `json:"seq"`
		Type    string  `json:"type"`
		Size    int     `json:"size"`
		Text    *string `json:"text"`
		Data    []byte  `json:"data"`
	}
	var text, bin line
	if err := json.Unmarshal([]byte(lines[0]), &text); err != nil || text.Channel != "ej.one" || text.Seq != nil ||
		text.Type != "text" || text.Size != 6 || text.Text == nil || *text.Text != "héllo" {
		t.Fatalf("line 1 %s: %+v %v", lines[0], text, err)
	}
	if tm, err := time.Parse(time.RFC3339Nano, text.Time); err != nil || tm.Before(before.Add(-time.Second)) {
		t.Fatalf("time %q: %v", text.Time, err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &bin); err != nil || bin.Channel != "ej.two" || bin.Type != "binary" ||
		bin.Size != 10 || string(bin.Data) != "two\nlines\xff" {
		t.Fatalf("line 2 %s: %+v %v", lines[1], bin, err)
	}
}

// envelopeServer speaks relay.v1.json the way fanout does once durable
// channels land: a seq, then events between messages.
func envelopeServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"relay.v1.json"}})
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		for _, f := range []string{
			`{"event":"gap","from":5,"to":9}`,
			`{"channel":"d","seq":10,"time":"2026-12-03T14:04:05.5Z","data":"ten"}`,
			`{"event":"live"}`,
			`{"event":"senders","count":2}`,
			`{"channel":"d","seq":11,"time":"2026-12-03T14:04:06Z","data_b64":"AP8="}`,
		} {
			if conn.Subprotocol() != "relay.v1.json" {
				return
			}
			conn.Write(ctx, websocket.MessageText, []byte(f))
		}
		conn.Close(websocket.StatusNormalClosure, "")
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestWatchEnvelopeEventsAndSeq: seq is printed, events go to stderr in
// words (stdout keeps only messages) or, with --json, to stdout as the
// server's objects; -n counts messages only.
func TestWatchEnvelopeEventsAndSeq(t *testing.T) {
	t.Parallel()
	url := "ws" + strings.TrimPrefix(envelopeServer(t).URL, "http") + "/ws/d"
	out, errb, code := runBin(t, "", nil, "watch", "--envelope", "--binary", "base64", url)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	if want := "d\t10\tten\nd\t11\tAP8=\n"; out != want {
		t.Errorf("stdout %q, want %q", out, want)
	}
	for _, w := range []string{"event: gap: messages 5 to 9 are no longer stored", "event: live", "event: senders: 2 connected"} {
		if !strings.Contains(errb, w) {
			t.Errorf("stderr %q lacks %q", errb, w)
		}
	}

	out, errb, code = runBin(t, "", nil, "watch", "--envelope", "--json", "-n", "2", url)
	if code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errb)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []string{
		`{"event":"gap","from":5,"to":9}`,
		`{"time":"2026-12-03T14:04:05.5Z","channel":"d","seq":10,"type":"text","size":3,"text":"ten"}`,
		`{"event":"live"}`,
		`{"event":"senders","count":2}`,
		`{"time":"2026-12-03T14:04:06Z","channel":"d","seq":11,"type":"binary","size":2,"data":"AP8="}`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("--json stdout\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
}

// Without --envelope relay watch offers no subprotocol and prints raw
// payloads, as before.
func TestWatchWithoutEnvelopeIsPlain(t *testing.T) {
	t.Parallel()
	r := startAll(t)
	w := startWatch(t, nil, "-n", "1", "ws://"+r.http+"/ws/plain.*")
	waitClients(t, r.http, 1)
	if _, errb, code := runBin(t, "raw\n", nil, "send", r.hs, "plain.x"); code != 0 {
		t.Fatal(errb)
	}
	if code := w.wait(t); code != 0 || w.stdout.String() != "raw\n" {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, w.stdout.String(), w.stderr.String())
	}
}

// TestWatchEnvelopeNotSelected: a server without the envelope (it selects
// no subprotocol) still works with --envelope: relay watch says so once and
// prints the raw payloads.
func TestWatchEnvelopeNotSelected(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&closer{})
	defer srv.Close()
	out, errb, code := runBin(t, "", nil, "watch", "--envelope", "-n", "1", "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws/x")
	if code != 0 || out != "hello\n" || !strings.Contains(errb, "did not select relay.v1.json") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errb)
	}
}
