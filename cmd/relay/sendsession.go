package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/relaydev/relay/shared/tcpproto"
)

// `relay send --ack --session ID` (docs/architecture.md, Durable channels:
// sender sessions): the messages are numbered from 1 across connections;
// each connection's handshake says which one it starts with
// (`CHANNEL [TOKEN] +ack SESSION FIRST`), so the stream stores each once
// under CHANNEL:SESSION:n. relay send keeps every message not yet covered by
// a +ACK; when the connection is lost, or the server closes it with a reply
// that waiting can cure (shutting down, upstream unavailable, store failed,
// rate limited), it reconnects and resends from the message after the last
// +ACK. Messages stored but not yet acknowledged are sent twice and stored
// once (the stream's duplicate window, 2 minutes, must cover the outage).

// Bounds on the messages kept for a resend: past them relay send stops
// reading its input until acks come (acks arrive every 100 ms).
const (
	outboxMaxMsgs  = 1 << 16
	outboxMaxBytes = 16 << 20
	// writeBatch is how many queued messages a connection writes before
	// it flushes.
	writeBatch = 1024
)

// retryable are the -ERR reasons (prefixes) after which a session sender
// reconnects; every other refusal is final.
var retryable = []string{"server shutting down", "upstream unavailable", "store failed", "rate limited", "too many connections", "publish failed"}

// outbox holds a session's messages from the first one not acknowledged.
type outbox struct {
	mu    sync.Mutex
	cond  *sync.Cond
	msgs  [][]byte // messages acked+1 ...
	acked uint64   // messages 1..acked are stored
	bytes int
	total uint64 // messages taken from the input
	eof   bool   // the input has ended
	err   error  // reading the input failed
}

func newOutbox() *outbox {
	o := &outbox{}
	o.cond = sync.NewCond(&o.mu)
	return o
}

// put adds the next message, waiting while the outbox is full.
func (o *outbox) put(ctx context.Context, msg []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for len(o.msgs) >= outboxMaxMsgs || (o.bytes >= outboxMaxBytes && len(o.msgs) > 0) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		o.cond.Wait()
	}
	o.msgs = append(o.msgs, msg)
	o.bytes += len(msg)
	o.total++
	o.cond.Broadcast()
	return nil
}

// end marks the input's end (err nil) or failure.
func (o *outbox) end(err error) {
	o.mu.Lock()
	o.eof, o.err = true, err
	o.cond.Broadcast()
	o.mu.Unlock()
}

// ack records that messages 1..n are stored and forgets them.
func (o *outbox) ack(n uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if n <= o.acked || n > o.total {
		return
	}
	k := int(n - o.acked)
	for _, m := range o.msgs[:k] {
		o.bytes -= len(m)
	}
	clear(o.msgs[:k])
	o.msgs = o.msgs[k:]
	o.acked = n
	o.cond.Broadcast()
}

// next returns up to max messages from number pos on, waiting until there
// is at least one, the input has ended (done: nothing from pos on, ever) or
// ctx ends.
func (o *outbox) next(ctx context.Context, pos uint64, max int) (msgs [][]byte, done bool, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for pos > o.total {
		if o.eof {
			return nil, true, o.err
		}
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		o.cond.Wait()
	}
	if pos <= o.acked {
		return nil, false, fmt.Errorf("internal: message %d asked for, %d already acknowledged", pos, o.acked)
	}
	i := int(pos - o.acked - 1)
	return o.msgs[i:min(len(o.msgs), i+max)], false, nil
}

// state is (acked, total, input ended).
func (o *outbox) state() (uint64, uint64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.acked, o.total, o.eof
}

// wake makes waiters look at their contexts again.
func (o *outbox) wake() {
	o.mu.Lock()
	o.cond.Broadcast()
	o.mu.Unlock()
}

// attempt is how one connection of a session ended.
type attempt struct {
	refusal string // the server's -ERR reason; "" without one
	err     error  // the connection's failure; nil: the server closed cleanly
}

// runSession sends with --session: connect, send from the first message
// not acknowledged, reconnect while that helps.
func (s *sender) runSession(ctx context.Context, stdin io.Reader) int {
	o := newOutbox()
	defer context.AfterFunc(ctx, o.wake)()
	go func() { o.end(s.produce(ctx, o, stdin)) }()

	lastProgress, lastAcked := time.Now(), uint64(0)
	for try := 0; ; try++ {
		acked, _, _ := o.state()
		if acked > lastAcked || try == 0 {
			lastProgress, lastAcked = time.Now(), acked
		}
		a, code, final := s.sessionConn(ctx, o, acked+1)
		if final {
			return code
		}
		if ctx.Err() != nil {
			return 130
		}
		acked, total, eof := o.state()
		if a.refusal == "" && a.err == nil && eof && acked == total {
			return 0
		}
		if acked > lastAcked {
			lastProgress, lastAcked, try = time.Now(), acked, 0
		}
		why := "the server closed the connection before acknowledging every message"
		switch {
		case a.refusal != "":
			why = "refused by server: " + a.refusal
		case a.err != nil:
			why = a.err.Error()
		}
		if time.Since(lastProgress) > s.retryFor {
			return s.fail("%s; no message acknowledged for %s (--retry-for): giving up with %d of %d messages stored (session %s)",
				why, s.retryFor.Round(time.Second), acked, total, s.session)
		}
		// Exponential backoff with full jitter, as `relay watch --reconnect`.
		wait := time.Duration(rand.Int64N(int64(min(5*time.Second, 100*time.Millisecond<<min(try, 6))) + 1))
		fmt.Fprintf(s.stderr, "relay send: %s; reconnecting in %s to resend from message %d (session %s)\n",
			redact(why, s.token), wait.Round(time.Millisecond), acked+1, s.session)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 130
		}
	}
}

// sessionConn runs one connection that starts with message first. final
// means the run is over with exit status code (success, a final refusal, an
// interruption); otherwise a says why the connection ended.
func (s *sender) sessionConn(ctx context.Context, o *outbox, first uint64) (a attempt, code int, final bool) {
	hs, err := tcpproto.Handshake{Channel: s.channel, Token: s.token, Ack: true, Session: s.session, First: first}.Line()
	if err != nil {
		return a, s.fail("handshake: %v", err), true
	}
	s.hsLine = hs
	d := net.Dialer{Timeout: s.timeout, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		if ctx.Err() != nil {
			return a, 130, true
		}
		return attempt{err: err}, 0, false
	}
	tcp := conn.(*net.TCPConn)
	defer tcp.Close()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(cctx, func() { tcp.SetDeadline(time.Now()) })()
	defer context.AfterFunc(cctx, o.wake)()
	replies := bufio.NewReader(tcp)

	// The handshake's answer: +OK, a refusal, or nothing (then retry).
	tcp.SetDeadline(time.Now().Add(s.hsTimeout))
	if _, err := tcp.Write(hs); err != nil {
		return attempt{err: fmt.Errorf("handshake: %w", err)}, 0, false
	}
	line, err := replies.ReadString('\n')
	if ctx.Err() != nil {
		return a, 130, true
	}
	if err != nil {
		return attempt{err: fmt.Errorf("handshake: %w", err)}, 0, false
	}
	switch r := tcpproto.ParseReply(line); r.Kind {
	case tcpproto.ReplyOK:
	case tcpproto.ReplyErr:
		if canRetry(r.Reason) {
			return attempt{refusal: r.Reason}, 0, false
		}
		return a, s.refusal(r.Reason), true
	default:
		return a, s.fail("handshake: unexpected reply %q (is %s a relay ingest listener?)", r.Reason, s.addr), true
	}
	tcp.SetDeadline(time.Time{})

	var refusal string
	read := make(chan error, 1)
	go func() {
		read <- s.readSessionReplies(replies, o, first, &refusal)
		cancel() // the server closed: stop writing
	}()

	werr := s.writeSession(cctx, tcp, o, first)
	if werr == nil {
		tcp.CloseWrite()
		// The server reads to EOF, waits for the last acks and closes.
		tcp.SetReadDeadline(time.Now().Add(s.timeout))
	}
	var rerr error
	select {
	case rerr = <-read:
	case <-time.After(s.timeout + time.Second):
		tcp.SetDeadline(time.Now())
		rerr = <-read
	}
	if ctx.Err() != nil {
		return a, 130, true
	}
	if refusal != "" {
		if canRetry(refusal) {
			return attempt{refusal: refusal}, 0, false
		}
		return a, s.refusal(refusal), true
	}
	if werr != nil && !errors.Is(werr, context.Canceled) && !isConnErr(werr) {
		return a, s.fail("reading input: %v", werr), true // not the connection's fault: resending cannot help
	}
	if rerr != nil {
		if errors.Is(rerr, os.ErrDeadlineExceeded) && werr == nil {
			return attempt{err: fmt.Errorf("sent everything, but the server did not close the connection within %s (--timeout)", s.timeout)}, 0, false
		}
		return attempt{err: fmt.Errorf("connection lost: %w", rerr)}, 0, false
	}
	if werr != nil && !errors.Is(werr, context.Canceled) {
		return attempt{err: fmt.Errorf("connection lost while sending: %w", werr)}, 0, false
	}
	return attempt{}, 0, false
}

// isConnErr tells a failed write on the connection from a failed read of
// the input.
func isConnErr(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, os.ErrDeadlineExceeded)
}

func canRetry(reason string) bool {
	for _, p := range retryable {
		if strings.HasPrefix(reason, p) {
			return true
		}
	}
	return false
}

// readSessionReplies reads server lines until the server closes: +ACK N
// acknowledges messages first..first+N-1, the first -ERR reason is kept,
// other lines (control messages) go to stdout.
func (s *sender) readSessionReplies(replies *bufio.Reader, o *outbox, first uint64, refusal *string) error {
	for {
		line, err := replies.ReadString('\n')
		if line != "" {
			switch r := tcpproto.ParseReply(line); r.Kind {
			case tcpproto.ReplyErr:
				if *refusal == "" {
					*refusal = r.Reason
				}
			case tcpproto.ReplyAck:
				if r.Acked > 0 {
					o.ack(first - 1 + r.Acked)
				}
				s.acked.Store(int64(first - 1 + r.Acked))
			case tcpproto.ReplyOK:
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

// writeSession writes messages first... framed for the listener until the
// input has ended (nil), or the connection or ctx fails.
func (s *sender) writeSession(ctx context.Context, conn net.Conn, o *outbox, first uint64) error {
	w := bufio.NewWriterSize(conn, 64<<10)
	pos := first
	var n [4]byte
	for {
		msgs, done, err := o.next(ctx, pos, writeBatch)
		if done || err != nil {
			if ferr := w.Flush(); err == nil {
				err = ferr
			}
			return err
		}
		for _, m := range msgs {
			if s.framing == "len32" {
				binary.BigEndian.PutUint32(n[:], uint32(len(m)))
				w.Write(n[:])
				w.Write(m)
			} else {
				w.Write(m)
				w.WriteByte('\n')
			}
		}
		pos += uint64(len(msgs))
		s.sentMsgs.Store(int64(pos - 1))
		if o.has(pos) {
			continue // more at once: write on, flush later
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

// has reports whether message pos is there, without waiting.
func (o *outbox) has(pos uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return pos <= o.total
}

// produce numbers the input's messages into o: --count messages from the
// template, or stdin's lines (a last line without \n is one too).
func (s *sender) produce(ctx context.Context, o *outbox, stdin io.Reader) error {
	put := func(msg []byte) error {
		if s.limiter != nil {
			if err := s.limiter.Wait(ctx); err != nil {
				return err
			}
		}
		return o.put(ctx, msg)
	}
	if s.tmpl != nil {
		for i := 1; i <= s.count; i++ {
			var b bytes.Buffer
			if err := s.tmpl.Execute(&b, templateData{N: i, Time: time.Now()}); err != nil {
				return err
			}
			if err := put(b.Bytes()); err != nil {
				return err
			}
		}
		return nil
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
			return nil
		}
		if err != nil {
			return err
		}
	}
}
