package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"text/template"
	"time"

	"golang.org/x/time/rate"

	"github.com/relaydev/relay/shared/tcpproto"
)

const sendUsage = `usage: relay send [flags] ADDR [CHANNEL] < data
       relay send [flags] --count N [--template T] ADDR [CHANNEL]

Sends stdin, or N generated messages, to an ingest listener.
  Fixed listener (ADDR=CHANNEL/FRAMING): every byte is data for the listener's
    channel from byte 0. Give no CHANNEL: relay send ADDR.
  Handshake listener (ADDR=*/FRAMING): give CHANNEL. relay send writes the
    line "CHANNEL [TOKEN]", waits for +OK (--handshake-timeout), then sends the
    data. Without CHANNEL the first line of the data is taken as the channel.

--framing must match the listener's FRAMING:
  line   stdin as it is; each line is a message (default)
  len32  each line of stdin, without its \n, becomes one 4-byte big-endian
         length + payload frame
  raw    stdin as it is (the server cuts messages as bytes arrive)
--count N sends N messages made from --template (Go text/template; .N counts
from 1, .Time is the time of sending), e.g. --count 3 --template 'msg {{.N}}'.
--rate R sends at most R messages per second (golang.org/x/time/rate).
The token (--token, --token-file or RELAY_TOKEN) goes into the handshake line
only; it is never printed.
--ack (durable channels, needs CHANNEL): asks the server for "+ACK N" lines,
N being how many of this connection's messages the stream has stored, and
exits 0 only if the last one counts every message sent. A channel that is not
durable refuses --ack.
--session ID (with --ack): numbers the messages across connections, so the
stream stores each once even when it is sent twice. When the connection is
lost or the server closes it with a reply that waiting can cure (shutting down,
upstream unavailable, store failed, rate limited), relay send reconnects with
backoff and resends from the message after the last +ACK, for as long as
messages keep being acknowledged (--retry-for without progress). ID: 8-64
characters of A-Z a-z 0-9 _ -, unique to this sender on the channel (e.g.
$(uuidgen)); resends are recognised within the stream's duplicate window (2m).

Control messages (what WebSocket clients of a control channel send back,
RELAY_CONTROL_CHANNELS) are printed to stdout as they arrive: on a line
listener one per line, on len32 each frame's payload and a newline, on raw
the bytes as they come. So relay send is an interactive nc:
  relay send --timeout 1h localhost:7071 dev.42     # type lines, read commands

Exit status:
  0  everything was sent and the server closed the connection without -ERR
     (with --ack: and its last +ACK counted every message sent)
  1  refused by the server (its -ERR reason is printed), no +OK in time,
     the connection failed, or the server did not confirm within --timeout
     (with --session: a final refusal, or no message acknowledged for
     --retry-for while reconnecting)
  2  bad usage
  130 interrupted
`

// send copies stdin (or generated messages) to an ingest listener. It
// exits 0 only when the server took everything: it half-closes after the
// last byte and waits for the server to close without an -ERR.
func send(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("send")
	framing := newChoice(fs, "framing", "line", "how messages are framed, to match the listener", "line", "len32", "raw")
	count := fs.Int("count", 0, "send this many messages made from --template instead of stdin (0: send stdin)")
	tmplText := fs.String("template", "", "message template for --count, Go text/template with {{.N}} and {{.Time}} (default \"message {{.N}}\")")
	msgRate := fs.Float64("rate", 0, "most messages per second (0: no limit)")
	timeout := fs.Duration("timeout", 10*time.Second, "connect timeout, and how long to wait after the last byte for the server to confirm")
	hsTimeout := fs.Duration("handshake-timeout", 3*time.Second, "how long to wait for +OK after the CHANNEL line")
	ack := fs.Bool("ack", false, "ask for +ACK lines (durable channels) and exit 1 unless every message was acknowledged as stored")
	session := fs.String("session", "", "with --ack: a session ID; on a lost connection reconnect and resend from the last +ACK (each message stored once)")
	retryFor := fs.Duration("retry-for", time.Minute, "with --session: give up after this long without a message acknowledged")
	tok := addTokenFlags(fs, "token to send after CHANNEL in the handshake")
	pos, code, ok := parseFlags(fs, sendUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	if code, ok := checkArgs(stderr, "send", "ADDR [CHANNEL]", pos, 1, 2); !ok {
		return code
	}
	switch {
	case *count < 0:
		return usageError(stderr, "send", "--count must be 0 (send stdin) or more, got %d", *count)
	case *msgRate < 0:
		return usageError(stderr, "send", "--rate must be 0 (no limit) or more, got %g", *msgRate)
	case *timeout <= 0:
		return usageError(stderr, "send", "--timeout must be more than 0, got %s", *timeout)
	case *hsTimeout <= 0:
		return usageError(stderr, "send", "--handshake-timeout must be more than 0, got %s", *hsTimeout)
	case *ack && len(pos) < 2:
		return usageError(stderr, "send", "--ack needs CHANNEL: only a handshake listener takes +ack")
	case *session != "" && !*ack:
		return usageError(stderr, "send", "--session needs --ack: the session resends from the last +ACK")
	case *session != "" && tcpproto.ValidSession(*session) != nil:
		return usageError(stderr, "send", "--session %q: %v", *session, tcpproto.ValidSession(*session))
	case *retryFor <= 0:
		return usageError(stderr, "send", "--retry-for must be more than 0, got %s", *retryFor)
	case *ack && *framing == "raw":
		return usageError(stderr, "send", "--ack needs to count messages, and raw framing has none the server and relay send agree on (use --framing line or len32)")
	case *msgRate > 0 && *count == 0 && *framing == "raw":
		return usageError(stderr, "send", "--rate needs messages: raw stdin has none (use --framing line or len32, or --count)")
	}
	if *tmplText != "" && *count == 0 {
		*count = 1
	}
	var tmpl *template.Template
	if *count > 0 {
		text := *tmplText
		if text == "" {
			text = "message {{.N}}"
		}
		var err error
		if tmpl, err = template.New("message").Option("missingkey=error").Parse(text); err != nil {
			return usageError(stderr, "send", "--template: %v", err)
		}
		var sample strings.Builder
		if err := tmpl.Execute(&sample, templateData{N: 1, Time: time.Now()}); err != nil {
			return usageError(stderr, "send", "--template: %v", err)
		}
		if *framing == "line" && strings.Contains(sample.String(), "\n") {
			return usageError(stderr, "send", "--template: a line message cannot hold a newline (it would be two messages); use --framing len32")
		}
	}
	token, err := tok.get()
	if err != nil {
		return usageError(stderr, "send", "%v", err)
	}
	addr := pos[0]
	var hsLine []byte
	if len(pos) == 2 {
		if hsLine, err = (tcpproto.Handshake{Channel: pos[1], Token: token, Ack: *ack}).Line(); err != nil {
			return usageError(stderr, "send", "CHANNEL or token: %v", err)
		}
	} else if token != "" && *tok.token+*tok.file != "" {
		return usageError(stderr, "send", "--token needs CHANNEL: only a handshake listener takes a token")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s := &sender{
		addr: addr, hsLine: hsLine, token: token,
		framing: *framing, tmpl: tmpl, count: *count, ack: *ack,
		session: *session, retryFor: *retryFor,
		timeout: *timeout, hsTimeout: *hsTimeout,
		stdout: stdout, stderr: stderr,
	}
	if len(pos) == 2 {
		s.channel = pos[1]
	}
	s.acked.Store(-1)
	if *msgRate > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(*msgRate), 1)
	}
	return s.run(ctx, stdin)
}

type templateData struct {
	N    int       // 1 for the first message
	Time time.Time // when the message is made
}

// sender is one `relay send` run.
type sender struct {
	addr, channel string
	hsLine        []byte // the handshake line, nil without CHANNEL
	token         string // to redact from anything printed
	framing       string
	tmpl          *template.Template // nil: send stdin
	count         int
	ack           bool          // asked for +ACK lines
	session       string        // --session: resend from the last +ACK after a lost connection
	retryFor      time.Duration // --session: give up after this long without progress
	sentMsgs      atomic.Int64  // messages written (framed as the listener frames them)
	acked         atomic.Int64  // the last +ACK N; -1 before any
	limiter       *rate.Limiter // nil: no limit
	timeout       time.Duration
	hsTimeout     time.Duration
	stdout        io.Writer
	stderr        io.Writer
}

func (s *sender) fail(format string, a ...any) int {
	fmt.Fprintf(s.stderr, "relay send: %s\n", redact(fmt.Sprintf(format, a...), s.token))
	return 1
}

func (s *sender) run(ctx context.Context, stdin io.Reader) int {
	if s.session != "" {
		return s.runSession(ctx, stdin)
	}
	d := net.Dialer{Timeout: s.timeout, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		if ctx.Err() != nil {
			return 130
		}
		return s.fail("%v", err)
	}
	tcp := conn.(*net.TCPConn)
	defer tcp.Close()
	// Interrupted: unblock whatever waits on the connection.
	defer context.AfterFunc(ctx, func() { tcp.SetDeadline(time.Now()) })()
	replies := bufio.NewReader(tcp)

	if s.hsLine != nil {
		if code, ok := s.handshake(ctx, tcp, replies); !ok {
			return code
		}
	}

	// The server speaks after the handshake only to refuse (-ERR), to ack,
	// or with control messages: read it all the way to its close.
	refused := make(chan string, 1)
	closed := make(chan error, 1)
	go func() { closed <- s.readReplies(replies, refused) }()

	sent := make(chan error, 1)
	go func() { sent <- s.write(ctx, tcp, stdin) }()

	select {
	case err := <-sent:
		if ctx.Err() != nil {
			return 130
		}
		if err != nil {
			// A refusal closes the connection, so our write fails too: the
			// server's reason is the better message.
			select {
			case reason := <-refused:
				return s.refusal(reason)
			case <-time.After(time.Second):
			}
			return s.fail("%v", err)
		}
		// Half-close: the server reads to EOF, publishes, and closes. Its
		// close without -ERR is the confirmation that everything was taken.
		tcp.CloseWrite()
		tcp.SetReadDeadline(time.Now().Add(s.timeout))
		err = <-closed
		select {
		case reason := <-refused:
			return s.refusal(reason)
		default:
		}
		if ctx.Err() != nil {
			return 130
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return s.fail("sent everything, but the server did not close the connection within %s (--timeout): cannot tell whether it was all accepted", s.timeout)
			}
			return s.fail("sent everything, then: %v", err)
		}
		if s.ack {
			if n, acked := s.sentMsgs.Load(), s.acked.Load(); acked != n {
				if acked < 0 {
					return s.fail("sent %d messages, but the server sent no +ACK: cannot tell whether any was stored", n)
				}
				return s.fail("sent %d messages, the server acknowledged %d as stored", n, acked)
			}
		}
		return 0
	case reason := <-refused:
		return s.refusal(reason)
	case err := <-closed:
		select {
		case reason := <-refused:
			return s.refusal(reason)
		default:
		}
		if ctx.Err() != nil {
			return 130
		}
		if err != nil {
			return s.fail("connection lost while sending: %v", err)
		}
		return s.fail("server closed the connection while we were sending")
	case <-ctx.Done():
		return 130
	}
}

// handshake writes the CHANNEL line and waits for +OK. A fixed listener
// never answers (it took the line as data), so the wait is short and the
// error says so.
func (s *sender) handshake(ctx context.Context, tcp *net.TCPConn, replies *bufio.Reader) (int, bool) {
	tcp.SetDeadline(time.Now().Add(s.hsTimeout))
	if _, err := tcp.Write(s.hsLine); err != nil {
		if ctx.Err() != nil {
			return 130, false
		}
		return s.fail("handshake: %v", err), false
	}
	line, err := replies.ReadString('\n')
	if ctx.Err() != nil {
		return 130, false
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			delivered := fmt.Sprintf("%q", s.channel)
			if s.token != "" {
				delivered = fmt.Sprintf("%q and the token (consider the token exposed to that channel's watchers)", s.channel)
			}
			return s.fail("no +OK within %s: is %s a fixed listener? a fixed listener takes no channel line (it may have delivered %s as data on its own channel); drop CHANNEL", s.hsTimeout, s.addr, delivered), false
		}
		if errors.Is(err, io.EOF) {
			return s.fail("handshake: the server closed the connection without a reply"), false
		}
		return s.fail("handshake: %v", err), false
	}
	switch r := tcpproto.ParseReply(line); r.Kind {
	case tcpproto.ReplyOK:
	case tcpproto.ReplyErr:
		return s.refusal(r.Reason), false
	default:
		return s.fail("handshake: unexpected reply %q (is %s a relay ingest listener?)", r.Reason, s.addr), false
	}
	tcp.SetDeadline(time.Time{})
	return 0, true
}

// readReplies reads server lines until the server closes: the first -ERR
// reason goes to refused, lines that are not replies to stdout. It returns
// nil on a clean close.
func (s *sender) readReplies(replies *bufio.Reader, refused chan<- string) error {
	for {
		// Control messages come framed as the listener frames (line: a line
		// that is not a reply; len32: a frame, whose first byte is 0 since
		// they are under 16 MiB, never '+' or '-'; raw: bytes as they come).
		if done, err := s.controlMessage(replies); done || err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			continue
		}
		line, err := replies.ReadString('\n')
		if line != "" {
			switch r := tcpproto.ParseReply(line); r.Kind {
			case tcpproto.ReplyErr:
				select {
				case refused <- r.Reason:
				default:
				}
			case tcpproto.ReplyOK:
				// Without CHANNEL on a handshake listener: our first line
				// was taken as the channel, and accepted.
			case tcpproto.ReplyAck:
				s.acked.Store(int64(r.Acked))
			default:
				fmt.Fprintln(s.stdout, r.Reason)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// controlMessage prints a len32 or raw control message waiting in replies
// to stdout (one per line) and reports whether it did; a reply line (or a
// line listener's message) is left for the caller.
func (s *sender) controlMessage(replies *bufio.Reader) (bool, error) {
	switch s.framing {
	case "len32":
		b, err := replies.Peek(1)
		if err != nil || b[0] != 0 {
			return false, nil // a reply line, or the end: the caller sees it
		}
		var hdr [4]byte
		if _, err := io.ReadFull(replies, hdr[:]); err != nil {
			return true, err
		}
		msg := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(replies, msg); err != nil {
			return true, err
		}
		s.stdout.Write(append(msg, '\n'))
		return true, nil
	case "raw":
		b, err := replies.Peek(1)
		if err != nil || b[0] == '-' || b[0] == '+' {
			return false, nil
		}
		buf := make([]byte, replies.Buffered())
		n, err := replies.Read(buf)
		s.stdout.Write(buf[:n])
		return true, err
	}
	return false, nil
}

// lineCounter counts the '\n's read through it, and whether bytes follow
// the last one.
type lineCounter struct {
	r       io.Reader
	n       *atomic.Int64
	partial bool
}

func (l *lineCounter) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if n > 0 {
		l.n.Add(int64(bytes.Count(p[:n], []byte{'\n'})))
		l.partial = p[n-1] != '\n'
	}
	return n, err
}

func (s *sender) refusal(reason string) int {
	hint := ""
	if s.hsLine == nil && (strings.HasPrefix(reason, "bad handshake") || strings.HasPrefix(reason, "handshake timeout") || strings.HasPrefix(reason, "no handshake")) {
		hint = fmt.Sprintf(" (%s is a handshake listener: give CHANNEL, relay send %s CHANNEL)", s.addr, s.addr)
	}
	return s.fail("refused by server: %s%s", reason, hint)
}

// write sends the messages, framed for the listener, flushing whenever
// there is nothing more to send at once (so an interactive stdin is sent
// line by line, and a file in large writes).
func (s *sender) write(ctx context.Context, conn net.Conn, stdin io.Reader) error {
	if s.tmpl == nil && s.limiter == nil && s.framing != "len32" {
		// line and raw: the bytes as they are; line messages are counted
		// as the server will cut them (a last line without \n is one too).
		lc := &lineCounter{r: stdin, n: &s.sentMsgs}
		_, err := io.Copy(conn, lc)
		if err == nil && lc.partial {
			s.sentMsgs.Add(1)
		}
		return err
	}
	w := bufio.NewWriterSize(conn, 64<<10)
	put := func(msg []byte) error {
		if s.limiter != nil {
			if err := w.Flush(); err != nil {
				return err
			}
			if err := s.limiter.Wait(ctx); err != nil {
				return err
			}
		}
		s.sentMsgs.Add(1)
		switch s.framing {
		case "len32":
			var n [4]byte
			binary.BigEndian.PutUint32(n[:], uint32(len(msg)))
			w.Write(n[:])
			w.Write(msg)
		case "line":
			w.Write(msg)
			w.WriteByte('\n')
		default:
			w.Write(msg)
		}
		return nil
	}
	if s.tmpl != nil {
		var b bytes.Buffer
		for i := 1; i <= s.count; i++ {
			b.Reset()
			if err := s.tmpl.Execute(&b, templateData{N: i, Time: time.Now()}); err != nil {
				return err
			}
			if err := put(b.Bytes()); err != nil {
				return err
			}
		}
		return w.Flush()
	}
	br := bufio.NewReaderSize(stdin, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if perr := put(bytes.TrimSuffix(line, []byte("\n"))); perr != nil {
				return perr
			}
		}
		if err == io.EOF {
			return w.Flush()
		}
		if err != nil {
			return err
		}
		if br.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}
