package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

const watchUsage = `usage: relay watch [flags] URL

Prints every message of a fanout WebSocket on stdout, one per line, e.g.
  relay watch ws://127.0.0.1:8080/ws/default
Binary messages are printed as they are, or hex/base64 encoded (--binary).
--json prints one JSON object per message, so a payload holding a newline is
unambiguous:
  {"time":"2026-01-02T15:04:05.1Z","type":"text","size":5,"text":"hello"}
  {"time":"2026-01-02T15:04:05.2Z","type":"binary","size":3,"data":"AAEC"}
--envelope asks for the relay.v1.json subprotocol: each message then says
which channel it came from (useful when URL watches a pattern, sensors.* or
sensors.>, quoted for the shell) and its stream sequence on durable
channels, printed as three tab-separated columns, seq "-" on core channels:
  sensors.a	42	21.5 C
With --json the object gains "channel" and "seq", and "time" is the
server's (the JetStream timestamp, or when the fanout received it):
  {"time":"…","channel":"sensors.a","seq":42,"type":"text","size":6,"text":"21.5 C"}
Events (replay done, a gap, the sender count) are printed on stderr, or with
--json as the server's JSON object on stdout ({"event":"gap","from":5,"to":9});
-n counts messages, not events.

Durable channels (RELAY_DURABLE_CHANNELS) keep history: --since SEQ starts
after stream sequence SEQ, --last N with the channel's last N messages, and
both then go on live with no gap and no duplicate. --seq prints each
message's stream sequence before it (tab-separated; "-" on core channels).
With any of --since, --last or --seq the envelope is used underneath, so
with --reconnect a new connection resumes after the last sequence printed:
nothing stored is missed, nothing is printed twice; what is no longer
stored is reported as a gap on stderr. A resume on a channel that is not
durable is refused (4400, exit 3).
  relay watch --reconnect --since 0 ws://127.0.0.1:8080/ws/orders
The token (--token, --token-file or RELAY_TOKEN) is sent as
"Authorization: Bearer TOKEN"; it is never printed.

A refused upgrade prints the server's reason (e.g. "400 Bad Request: invalid
channel name: ..."); a close prints its code and reason (see README, "Close
codes and refusals") on stderr.

--reconnect: after 1001 (server going away), 1008 (slow consumer), 1011,
1012 (fanout lost NATS), 1013, 4429 (over a limit), a lost connection or a
failed connect (network error, HTTP 5xx or 429), connect again after an
exponential backoff with full jitter (a random wait up to 250ms, 500ms, 1s, ...
--backoff-max). Never after a normal close (1000) or a refusal (HTTP 4xx,
1002, 1003, 1009, 4400, 4401, 4403, 4410): those exit. Messages sent while
disconnected are missed.

--talk (control channels, RELAY_CONTROL_CHANNELS): each line of stdin is
sent to the channel's TCP senders (a text message, or binary when the line is
not UTF-8); at the end of stdin watching goes on. With RELAY_AUTH=jwt the token
needs the control permission for the channel (else the server closes 4403);
on other channels the server closes with 1003.
  relay watch --talk ws://127.0.0.1:8080/ws/dev.42

Exit status:
  0  -n messages received; interrupted (Ctrl-C); or the server closed
     normally (1000) or went away (1001) without --reconnect
  1  could not connect, the connection was lost, or the server closed it with
     an error code (1008, 1011, 1012, 4429, ...)
  2  bad usage
  3  refused: the upgrade was refused with HTTP 4xx (bad channel name, origin
     not allowed, ...) or the server closed with 1002 (protocol error), 1003
     (--talk on a channel that is not a control channel), 1009 (a --talk line
     over the server's maximum), 4400, 4401, 4403 or 4410; trying again
     unchanged will not help
`

// Close codes of relay's fanout (README, "Close codes and refusals").
const (
	statusBadRequest   websocket.StatusCode = 4400
	statusUnauthorized websocket.StatusCode = 4401
	statusForbidden    websocket.StatusCode = 4403
	statusGone         websocket.StatusCode = 4410
	statusRateLimited  websocket.StatusCode = 4429
)

// closeMeaning explains a close code in a few words, for people.
var closeMeaning = map[websocket.StatusCode]string{
	websocket.StatusNormalClosure:   "normal closure",
	websocket.StatusGoingAway:       "server going away",
	websocket.StatusUnsupportedData: "unsupported data: clients may not send data on this channel",
	websocket.StatusPolicyViolation: "policy violation: fell behind (slow consumer), data missed",
	websocket.StatusMessageTooBig:   "message too big",
	websocket.StatusInternalError:   "server error",
	websocket.StatusServiceRestart:  "service restart: fanout lost NATS, data may be missed",
	websocket.StatusTryAgainLater:   "try again later",
	websocket.StatusAbnormalClosure: "connection lost without a close frame",
	statusBadRequest:                "bad request",
	statusUnauthorized:              "no token, or an invalid or expired token",
	statusForbidden:                 "channel not permitted for this token",
	statusGone:                      "resume point no longer stored",
	statusRateLimited:               "over a rate or connection limit",
}

// Exit statuses of relay watch (2, bad usage, is usageError's).
const (
	watchOK      = 0
	watchFailed  = 1
	watchRefused = 3
)

// watch prints every message of a WebSocket URL on its own line.
func watch(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("watch")
	count := fs.Int("n", 0, "exit 0 after this many messages (0: run until closed)")
	binary := newChoice(fs, "binary", "raw", "how to print binary messages", "raw", "hex", "base64")
	jsonOut := fs.Bool("json", false, "print one JSON object per message: time, type, size, text or base64 data")
	envelope := fs.Bool("envelope", false, "use the relay.v1.json envelope: print each message's channel and seq (and events)")
	var since, last optCount
	fs.Var(&since, "since", "durable channels: start after stream sequence `SEQ` (0: everything stored)")
	fs.Var(&last, "last", "durable channels: start with the channel's last `N` messages")
	seq := fs.Bool("seq", false, "print each message's stream sequence before it (durable channels; \"-\" on others)")
	timeout := fs.Duration("timeout", 10*time.Second, "connect timeout")
	origin := fs.String("origin", "", "Origin header to send (for servers that check it)")
	reconnect := fs.Bool("reconnect", false, "reconnect with backoff after a going-away, slow-consumer or service-restart close, or a lost connection")
	backoffMax := fs.Duration("backoff-max", 30*time.Second, "with --reconnect: the longest wait between attempts")
	tok := addTokenFlags(fs, "token to send as Authorization: Bearer")
	talkBack := fs.Bool("talk", false, "talk back: send each line of stdin as a message to the channel's TCP senders (control channels, RELAY_CONTROL_CHANNELS)")
	pos, code, ok := parseFlags(fs, watchUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	if code, ok := checkArgs(stderr, "watch", "URL", pos, 1, 1); !ok {
		return code
	}
	switch {
	case *count < 0:
		return usageError(stderr, "watch", "-n must be 0 (run until closed) or more, got %d", *count)
	case *timeout <= 0:
		return usageError(stderr, "watch", "--timeout must be more than 0, got %s", *timeout)
	case *backoffMax <= 0:
		return usageError(stderr, "watch", "--backoff-max must be more than 0, got %s", *backoffMax)
	case since.set && last.set:
		return usageError(stderr, "watch", "give --since or --last, not both")
	}
	u, err := url.Parse(pos[0])
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError(stderr, "watch", "URL must look like ws://HOST:PORT/ws/CHANNEL (or wss://)")
	}
	token, err := tok.get()
	if err != nil {
		return usageError(stderr, "watch", "%v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := &watcher{
		url: pos[0], timeout: *timeout, want: *count, binary: *binary, json: *jsonOut, envelope: *envelope,
		since: since.get(), last: int(min(last.get(), 1<<30)), seq: *seq,
		out: bufio.NewWriterSize(stdout, 64<<10), stderr: stderr,
		secrets: []string{token, u.Query().Get("token")},
		header:  http.Header{},
	}
	if *origin != "" {
		w.header.Set("Origin", *origin)
	}
	if token != "" {
		w.header.Set("Authorization", "Bearer "+token)
	}
	if *talkBack {
		w.talk = readLines(stdin)
	}
	if !*reconnect {
		return w.session(ctx).code
	}
	return w.reconnecting(ctx, *backoffMax)
}

// watcher is one `relay watch` run, over one or more connections.
type watcher struct {
	url      string
	header   http.Header
	timeout  time.Duration
	want     int // messages to print before exiting; 0: no limit
	got      int
	binary   string
	json     bool
	envelope bool // offer relay.v1.json
	// Resuming a durable channel: since (-1: not asked) or last (-1: not
	// asked) for the first connection; lastSeq, the last sequence printed,
	// for every later one. seq prints sequences.
	since    int64
	last     int
	seq      bool
	lastSeq  uint64
	out      *bufio.Writer
	stderr   io.Writer
	secrets  []string      // never printed
	retrying bool          // a session after the first, with --reconnect
	talk     <-chan []byte // --talk: stdin's lines, to send; nil without
}

// readLines hands stdin's lines (without \n) to whichever connection is up;
// while none is, stdin is not read further. The channel closes at EOF.
func readLines(stdin io.Reader) <-chan []byte {
	lines := make(chan []byte)
	go func() {
		defer close(lines)
		br := bufio.NewReaderSize(stdin, 64<<10)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 || err == nil {
				lines <- bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
			}
			if err != nil {
				return
			}
		}
	}()
	return lines
}

// talkBack sends the lines of w.talk on conn until ctx ends or stdin does
// (watching goes on). A line that is not UTF-8 goes as a binary message.
func (w *watcher) talkBack(ctx context.Context, conn *websocket.Conn) {
	for {
		select {
		case <-ctx.Done():
			return
		case line, ok := <-w.talk:
			if !ok {
				return
			}
			typ := websocket.MessageText
			if !utf8.Valid(line) {
				typ = websocket.MessageBinary
			}
			if err := conn.Write(ctx, typ, line); err != nil {
				if ctx.Err() == nil {
					w.printf("--talk: a line was not sent: %v", err)
				}
				return
			}
		}
	}
}

// outcome is how one connection ended.
type outcome struct {
	code      int                  // exit status, if relay watch stops here
	retry     bool                 // --reconnect may connect again
	status    websocket.StatusCode // the close code, or -1
	connected bool                 // the upgrade succeeded
	received  int                  // messages on this connection
}

func (w *watcher) printf(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	for _, s := range w.secrets {
		msg = redact(msg, s)
	}
	fmt.Fprintf(w.stderr, "relay watch: %s\n", msg)
}

// session connects once and prints messages until the connection ends.
func (w *watcher) session(ctx context.Context) outcome {
	dialCtx, cancel := context.WithTimeout(ctx, w.timeout)
	opts := &websocket.DialOptions{HTTPHeader: w.header}
	if w.enveloped() {
		opts.Subprotocols = []string{subprotocolJSON}
	}
	conn, resp, err := websocket.Dial(dialCtx, w.sessionURL(), opts)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return outcome{code: watchOK, status: -1}
		}
		return w.dialFailed(resp, err)
	}
	defer conn.CloseNow()
	if w.retrying {
		w.printf("reconnected")
	}
	conn.SetReadLimit(64 << 20)
	if w.talk != nil {
		tctx, stopTalk := context.WithCancel(ctx)
		defer stopTalk()
		go w.talkBack(tctx, conn)
	}
	o := outcome{connected: true, status: -1}
	enveloped := w.enveloped() && conn.Subprotocol() == subprotocolJSON
	if w.enveloped() && !enveloped {
		w.printf("the server did not select %s: printing raw payloads without channel or seq", subprotocolJSON)
	}
	for w.want == 0 || w.got < w.want {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			w.out.Flush()
			if ctx.Err() != nil {
				conn.Close(websocket.StatusNormalClosure, "")
				o.code = watchOK
				return o
			}
			return w.closed(o, err)
		}
		var meta *envelopeMeta
		if enveloped {
			var isEvent bool
			typ, data, meta, isEvent, err = w.unwrap(data)
			if err != nil {
				w.out.Flush()
				w.printf("%v", err)
				conn.Close(websocket.StatusUnsupportedData, "bad envelope")
				o.code = watchFailed
				return o
			}
			if isEvent {
				if err := w.event(data); err != nil {
					o.code = watchFailed
					return o
				}
				continue
			}
		}
		w.got++
		o.received++
		if meta != nil && meta.Seq > 0 {
			w.lastSeq = meta.Seq
		}
		if err := w.print(typ, data, meta); err != nil {
			o.code = watchFailed // stdout closed (e.g. | head)
			return o
		}
	}
	conn.Close(websocket.StatusNormalClosure, "")
	o.code = watchOK
	return o
}

// dialFailed explains a failed connect: the server's own words for a
// refused upgrade (the body of the non-101 answer), else the network error.
func (w *watcher) dialFailed(resp *http.Response, err error) outcome {
	if resp == nil {
		w.printf("%v", err)
		return outcome{code: watchFailed, retry: true, status: -1}
	}
	body := ""
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		body = strings.Join(strings.Fields(string(b)), " ")
	}
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols:
		w.printf("%v", err) // upgraded, but the handshake was bad (e.g. a subprotocol)
		return outcome{code: watchFailed, status: -1}
	case body != "":
		w.printf("upgrade refused: %s: %s", resp.Status, body)
	default:
		w.printf("upgrade refused: %s", resp.Status)
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return outcome{code: watchFailed, retry: true, status: -1}
	}
	if resp.StatusCode >= 400 {
		return outcome{code: watchRefused, status: -1}
	}
	return outcome{code: watchFailed, status: -1}
}

// closed explains how an open connection ended and what it means for the
// exit status and a reconnect.
func (w *watcher) closed(o outcome, err error) outcome {
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		w.printf("connection lost: %v", err)
		o.code, o.retry = watchFailed, true
		return o
	}
	o.status = ce.Code
	meaning := closeMeaning[ce.Code]
	switch {
	case ce.Reason != "" && meaning != "":
		w.printf("closed by server: %d %s (%s)", int(ce.Code), ce.Reason, meaning)
	case ce.Reason != "":
		w.printf("closed by server: %d %s", int(ce.Code), ce.Reason)
	case meaning != "":
		w.printf("closed by server: %d (%s)", int(ce.Code), meaning)
	default:
		w.printf("closed by server: %d", int(ce.Code))
	}
	switch ce.Code {
	case websocket.StatusNormalClosure:
		o.code = watchOK
	case websocket.StatusGoingAway:
		o.code, o.retry = watchOK, true
	case statusBadRequest, statusUnauthorized, statusForbidden, statusGone,
		websocket.StatusUnsupportedData, websocket.StatusMessageTooBig, websocket.StatusProtocolError:
		o.code = watchRefused
	default: // 1008, 1011, 1012, 1013, 4429, and codes we do not know
		o.code, o.retry = watchFailed, true
	}
	return o
}

// wsMessage is one line of --json output.
type wsMessage struct {
	Time    string  `json:"time"`
	Channel string  `json:"channel,omitempty"` // --envelope
	Seq     uint64  `json:"seq,omitempty"`     // --envelope, durable channels
	Type    string  `json:"type"`
	Size    int     `json:"size"`
	Text    *string `json:"text,omitempty"`
	Data    []byte  `json:"data,omitempty"` // base64 in JSON
}

func (w *watcher) print(typ websocket.MessageType, data []byte, meta *envelopeMeta) error {
	switch {
	case w.json:
		m := wsMessage{Time: time.Now().UTC().Format(time.RFC3339Nano), Size: len(data)}
		if meta != nil {
			m.Time, m.Channel, m.Seq = meta.Time, meta.Channel, meta.Seq
		}
		if typ == websocket.MessageText {
			text := string(data)
			m.Type, m.Text = "text", &text
		} else {
			m.Type, m.Data = "binary", data
			if m.Data == nil {
				m.Data = []byte{}
			}
		}
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		w.out.Write(b)
		w.out.WriteByte('\n')
		return w.out.Flush()
	}
	if meta != nil && (w.envelope || w.seq) {
		if w.envelope {
			w.out.WriteString(meta.Channel)
			w.out.WriteByte('\t')
		}
		if meta.Seq > 0 {
			w.out.WriteString(strconv.FormatUint(meta.Seq, 10))
		} else {
			w.out.WriteByte('-')
		}
		w.out.WriteByte('\t')
	}
	switch {
	case typ == websocket.MessageBinary && w.binary == "hex":
		w.out.WriteString(hex.EncodeToString(data))
	case typ == websocket.MessageBinary && w.binary == "base64":
		w.out.WriteString(base64.StdEncoding.EncodeToString(data))
	default:
		w.out.Write(data)
	}
	w.out.WriteByte('\n')
	return w.out.Flush()
}

// reconnecting runs sessions until one ends for good, waiting between them
// an exponential backoff with full jitter: a random time in [0, min(max,
// 250ms*2^attempt)), so a fleet of watchers cut at once does not come back
// at once.
func (w *watcher) reconnecting(ctx context.Context, backoffMax time.Duration) int {
	const base = 250 * time.Millisecond
	attempt := 0
	for {
		start := time.Now()
		o := w.session(ctx)
		if !o.retry || ctx.Err() != nil || (w.want > 0 && w.got >= w.want) {
			return o.code
		}
		// A connection that worked for a while starts the backoff over;
		// one that fails at once (a fanout without NATS, a 503) backs off.
		if o.connected && (o.received > 0 || time.Since(start) > 10*time.Second) {
			attempt = 0
		}
		if o.status == websocket.StatusGoingAway {
			attempt = 0 // a drain: another replica is ready now
		}
		if o.status == statusRateLimited {
			attempt = max(attempt, 3)
		}
		ceil := min(backoffMax, base<<min(attempt, 20))
		wait := rand.N(ceil)
		attempt++
		w.retrying = true
		if w.lastSeq > 0 {
			w.printf("reconnecting in %s (attempt %d); resuming after seq %d", wait.Round(time.Millisecond), attempt, w.lastSeq)
		} else {
			w.printf("reconnecting in %s (attempt %d); messages sent meanwhile are missed", wait.Round(time.Millisecond), attempt)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return watchOK
		case <-t.C:
		}
	}
}

// subprotocolJSON is fanout's envelope subprotocol (README, "The envelope").
const subprotocolJSON = "relay.v1.json"

// envelopeFrame is one relay.v1.json frame: a message or an event.
type envelopeFrame struct {
	Event   string  `json:"event"`
	Channel string  `json:"channel"`
	Seq     uint64  `json:"seq"`
	Time    string  `json:"time"`
	Data    *string `json:"data"`
	DataB64 *string `json:"data_b64"`
	From    uint64  `json:"from"`
	To      uint64  `json:"to"`
	Count   *int    `json:"count"`
}

// envelopeMeta is what the envelope says about a message besides its payload.
type envelopeMeta struct {
	Channel string
	Seq     uint64
	Time    string
}

// unwrap decodes an envelope frame into the message's type, payload and
// meta, or reports an event (data is then the frame itself).
func (w *watcher) unwrap(frame []byte) (websocket.MessageType, []byte, *envelopeMeta, bool, error) {
	var f envelopeFrame
	if err := json.Unmarshal(frame, &f); err != nil {
		return 0, nil, nil, false, fmt.Errorf("bad envelope from the server: %v", err)
	}
	if f.Event != "" {
		return 0, frame, nil, true, nil
	}
	meta := &envelopeMeta{Channel: f.Channel, Seq: f.Seq, Time: f.Time}
	switch {
	case f.Data != nil:
		return websocket.MessageText, []byte(*f.Data), meta, false, nil
	case f.DataB64 != nil:
		b, err := base64.StdEncoding.DecodeString(*f.DataB64)
		if err != nil {
			return 0, nil, nil, false, fmt.Errorf("bad envelope from the server: data_b64: %v", err)
		}
		return websocket.MessageBinary, b, meta, false, nil
	}
	return 0, nil, nil, false, fmt.Errorf("bad envelope from the server: neither data nor data_b64 nor event")
}

// event shows an event frame: with --json on stdout as the server's object
// (one line), else in words on stderr, so stdout keeps only messages.
func (w *watcher) event(frame []byte) error {
	var f envelopeFrame
	_ = json.Unmarshal(frame, &f) // unwrap has decoded it already
	if w.json {
		var buf bytes.Buffer
		if err := json.Compact(&buf, frame); err != nil {
			return err
		}
		w.out.Write(buf.Bytes())
		w.out.WriteByte('\n')
		return w.out.Flush()
	}
	switch {
	case f.Event == "live":
		w.printf("event: live (replay done, what follows is live)")
	case f.Event == "gap":
		w.printf("event: gap: messages %d to %d are no longer stored and were missed", f.From, f.To)
	case f.Event == "senders" && f.Count != nil:
		w.printf("event: senders: %d connected", *f.Count)
	default:
		w.printf("event: %s", bytes.TrimSpace(frame))
	}
	return nil
}

// enveloped reports whether the watcher asks for the envelope: to print
// channels or sequences, or to know where to resume.
func (w *watcher) enveloped() bool {
	return w.envelope || w.seq || w.since >= 0 || w.last >= 0
}

// sessionURL is the URL of the next connection: after the last sequence
// printed once there is one, else with --since or --last as given.
func (w *watcher) sessionURL() string {
	if w.lastSeq == 0 && w.since < 0 && w.last < 0 {
		return w.url
	}
	u, err := url.Parse(w.url) // checked in watch
	if err != nil {
		return w.url
	}
	q := u.Query()
	q.Del("since")
	q.Del("last")
	q.Del("since_time")
	switch {
	case w.lastSeq > 0:
		q.Set("since", strconv.FormatUint(w.lastSeq, 10))
	case w.since >= 0:
		q.Set("since", strconv.FormatInt(w.since, 10))
	case w.last >= 0:
		q.Set("last", strconv.Itoa(w.last))
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// optCount is a flag taking a count or sequence, 0 or more, that may be
// left unset (nothing is shown as its default).
type optCount struct {
	v   int64
	set bool
}

func (o *optCount) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatInt(o.v, 10)
}

func (o *optCount) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return errors.New("must be 0 or more")
	}
	o.v, o.set = v, true
	return nil
}

// get is the value, or -1 when unset.
func (o *optCount) get() int64 {
	if !o.set {
		return -1
	}
	return o.v
}
