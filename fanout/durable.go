package fanout

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
)

// Durable channels (docs/architecture.md, Durable channels). A fanout
// reads a durable channel through ONE JetStream ordered consumer per
// channel (not per client), so every message has its stream sequence, and
// keeps the channel's last RELAY_DURABLE_RING messages in a ring. Each
// client of the channel has a position: the sequence of the last message
// queued for it. A client is either live (the channel's consumer queues each
// message for it) or catching up (a goroutine of its own queues what it has
// not seen, at its pace: from the ring when the ring covers its position,
// else from JetStream through a short-lived ordered consumer). The switch
// from catching up to live happens under the channel's ringMu, which the
// consumer's callback holds while it adds a message to the ring and to the
// live clients: so the handoff has no gap and no duplicate.
//
// Memory stays bounded: a catching-up client's queue is filled only up to
// its byte budget (RELAY_FANOUT_CLIENT_QUEUE_BYTES), refilled when it has
// drained half of it, and the messages are shared with the ring.

// Close codes of resumes (README, close codes).
const (
	StatusBadRequest    websocket.StatusCode = 4400 // bad since/last/since_time, or a resume on a channel that is not durable
	StatusResumeExpired websocket.StatusCode = 4410 // a plain client's resume point is no longer stored
)

const (
	reasonResumeExpired = "resume point no longer stored; reconnect without since"
	reasonStreamRead    = "reading the channel's history failed; retry later"

	// jsTimeout bounds each JetStream API request of a reader.
	jsTimeout = 10 * time.Second
	// jsNextWait bounds one wait for the next stored message; jsNextTries
	// of them in a row without one end the client with 1012 (the stream
	// said there are messages to read).
	jsNextWait  = 5 * time.Second
	jsNextTries = 3
	// jsPrefetch bounds what a reader's ordered consumer pulls ahead of
	// the client: messages and bytes.
	jsPrefetch      = 256
	jsPrefetchBytes = 1 << 20
	// maxLast bounds ?last=.
	maxLast = 1 << 20
	// maxStreamReaders bounds a pod's clients reading from JetStream at
	// once; the others wait their turn. Without it a storm of resumes the
	// ring cannot serve (10,000 at once, say) is a storm of JetStream API
	// requests, and the stream answers many of them too late.
	maxStreamReaders = 32
)

// errResume is wrapped by parseResume's errors: a 4400.
var errResume = errors.New("fanout: bad resume")

// resumeKind says where a client starts.
type resumeKind uint8

const (
	resumeNone  resumeKind = iota // live: messages after the upgrade
	resumeSince                   // ?since=SEQ: messages after stream sequence SEQ
	resumeLast                    // ?last=N: the channel's last N messages, then live
	resumeTime                    // ?since_time=RFC3339: messages stored at or after it
)

type resume struct {
	kind resumeKind
	seq  uint64
	last int
	t    time.Time
}

// parseResume reads since, last and since_time from a query. At most one
// may be given.
func parseResume(q url.Values) (resume, error) {
	var r resume
	n := 0
	for _, k := range []string{"since", "last", "since_time"} {
		vs, ok := q[k]
		if !ok {
			continue
		}
		n++
		if len(vs) != 1 {
			return r, fmt.Errorf("%w: %s given %d times", errResume, k, len(vs))
		}
		v := vs[0]
		switch k {
		case "since":
			seq, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return r, fmt.Errorf("%w: since=%.32q: want a stream sequence (0 or more)", errResume, v)
			}
			r = resume{kind: resumeSince, seq: seq}
		case "last":
			l, err := strconv.Atoi(v)
			if err != nil || l < 0 || l > maxLast {
				return r, fmt.Errorf("%w: last=%.32q: want a count from 0 to %d", errResume, v, maxLast)
			}
			r = resume{kind: resumeLast, last: l}
		case "since_time":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return r, fmt.Errorf("%w: since_time=%.40q: want RFC 3339, e.g. 2026-01-02T15:04:05Z", errResume, v)
			}
			r = resume{kind: resumeTime, t: t}
		}
	}
	if n > 1 {
		return resume{}, fmt.Errorf("%w: give only one of since, last and since_time", errResume)
	}
	return r, nil
}

// durableState is a client's place in a durable channel; guarded by
// client.mu (pos and catching also change under the channel's ringMu).
type durableState struct {
	ch       *channel // nil: not a durable channel's client
	pos      uint64   // stream sequence of the last message queued for the client
	catching bool     // not live: its catch-up goroutine queues what it has not seen
	running  bool     // that goroutine runs
	start    resume   // a resume the ring could not place: the reader starts from it
	replay   bool     // the client asked for a replay: tell it when it is live
	drained  chan struct{}
}

// encodeJS is encode for a message of channel from the channel's stream:
// its sequence and time are the stream's.
func encodeJS(channel string, m jetstream.Msg, md *jetstream.MsgMetadata) *message {
	typ := websocket.MessageText
	data := m.Data()
	if m.Headers().Get(subjects.FormatHeader) == subjects.FormatBinary || !utf8.Valid(data) {
		typ = websocket.MessageBinary
	}
	msg := newMessage(typ, data)
	msg.channel, msg.seq, msg.time = channel, md.Sequence.Stream, md.Timestamp
	return msg
}

// consume sets up ch's ordered consumer from the end of the stream and
// closes ch.ready. Everything stored after the stream's last sequence at
// that moment reaches ch, in order, so a client joining after consume
// returns gets every message stored after its upgrade.
func (h *hub) consume(ch *channel) {
	defer close(ch.ready)
	ctx, cancel := context.WithTimeout(context.Background(), h.confirmTimeout)
	defer cancel()
	err := func() error {
		st, err := h.js.Stream(ctx, h.stream.Name())
		if err != nil {
			return err
		}
		floor := st.CachedInfo().State.LastSeq
		cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{ch.subject},
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:    floor + 1,
		})
		if err != nil {
			return err
		}
		ch.ring = newRing(h.ringSize, floor)
		cc, err := cons.Consume(ch.deliverDurable, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			// The ordered consumer recreates itself after most errors (a
			// missed heartbeat, a reconnect). Without its stream it cannot:
			// the channel's clients would wait forever, so they are told.
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				n := ch.closeAll(websocket.StatusServiceRestart, reasonStreamRead, metrics.DisconnectUpstreamRead)
				h.log.Warn("durable channel's stream is gone; closed its clients", "channel", ch.name, "clients", n, "err", err)
				return
			}
			h.log.Debug("durable channel consumer", "channel", ch.name, "err", err)
		}))
		if err != nil {
			return err
		}
		ch.cons, ch.consName = cc, cons.CachedInfo().Name
		return nil
	}()
	if err != nil {
		ch.err = fmt.Errorf("%w: %s: %w", ErrSubscribe, ch.subject, err)
		h.mu.Lock()
		if h.channels[ch.name] == ch {
			delete(h.channels, ch.name)
		}
		h.mu.Unlock()
		return
	}
	h.m.Subscriptions.Inc()
	h.log.Debug("durable channel consumer started", "subject", ch.subject, "from", ch.ring.floor+1)
}

// stopConsume ends ch's consumer after its last client left.
func (h *hub) stopConsume(ch *channel) {
	ch.cons.Stop()
	h.m.Subscriptions.Dec()
	name := ch.consName
	go func() {
		// The server would remove the consumer once inactive; saying so
		// frees it now.
		ctx, cancel := context.WithTimeout(context.Background(), jsTimeout)
		defer cancel()
		if err := h.js.DeleteConsumer(ctx, h.stream.Name(), name); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			h.log.Debug("delete durable channel consumer", "channel", ch.name, "err", err)
		}
	}()
	h.log.Debug("durable channel consumer stopped", "subject", ch.subject)
}

// deliverDurable is the channel consumer's callback (one goroutine per
// consumer, in stream order): the message joins the ring and the queue of
// every live client. It never blocks on a client.
func (ch *channel) deliverDurable(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		ch.h.log.Warn("durable message without metadata", "channel", ch.name, "err", err)
		return
	}
	msg := encodeJS(ch.name, m, md)
	ch.h.m.MessagesIn.Inc()
	ch.ringMu.Lock()
	defer ch.ringMu.Unlock()
	if !ch.ring.push(msg) {
		return // not after the last one: never hand a client a message twice
	}
	ch.mu.RLock()
	for _, c := range ch.clients {
		c.deliverLive(msg)
	}
	ch.mu.RUnlock()
}

// deliverLive queues msg for a live client. A client whose queue is at its
// byte budget is not cut: it stops being live and catches up at its pace.
// ch.ringMu is held.
func (c *client) deliverLive(msg *message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := &c.dur
	if c.closed || d.catching || msg.seq <= d.pos {
		return
	}
	f := c.frame(msg)
	if !c.feed.fits(f) {
		d.catching = true
		c.m.CatchUps.Inc()
		c.startCatchUpLocked()
		return
	}
	c.feed.push(f)
	d.pos = msg.seq
	c.kickLocked()
}

// position places a client that has just joined durable channel ch: live
// from now on, or at its resume point. What the ring holds after that
// point is queued at once (up to the client's budget); whatever else it
// needs is left to its catch-up goroutine, started by serveClient.
func (ch *channel) position(c *client, rs resume) {
	ch.ringMu.Lock()
	defer ch.ringMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	d := &c.dur
	d.ch = ch
	r := ch.ring
	var pos uint64
	ok := true
	switch rs.kind {
	case resumeNone:
		d.pos, d.catching = r.last(), false
		return
	case resumeSince:
		pos, ok = rs.seq, r.covers(rs.seq)
	case resumeLast:
		pos, ok = r.lastN(rs.last)
	case resumeTime:
		pos, ok = r.before(rs.t)
	}
	d.replay, d.catching = true, true
	if !ok {
		// Read from the stream first: the resume point or the ring's
		// floor is where the reader starts.
		d.start = rs
		if rs.kind == resumeSince {
			d.pos, d.start = rs.seq, resume{}
		}
		return
	}
	d.pos = pos
	c.m.Replays.Inc(metrics.ReplayRing)
	ch.fillLocked(c)
}

// fillLocked queues the ring's messages after the client's position, as
// many as its budget takes, and makes it live when it has them all. Both
// ch.ringMu and c.mu are held; the ring covers the position.
func (ch *channel) fillLocked(c *client) (live bool) {
	d := &c.dur
	r := ch.ring
	i := r.after(d.pos)
	pushed := false
	for ; i < r.n; i++ {
		msg := r.at(i)
		f := c.frame(msg)
		if !c.feed.fits(f) {
			break
		}
		c.feed.push(f)
		d.pos = msg.seq
		pushed = true
	}
	if i == r.n {
		d.catching = false
		if d.replay {
			d.replay = false
			c.liveLocked()
		}
	}
	if pushed || !d.catching {
		c.kickLocked()
	}
	return !d.catching
}

// frame is what the client is sent for msg: its envelope or the payload.
func (c *client) frame(msg *message) *message {
	if c.envelope {
		return msg.envelope()
	}
	return msg
}

// liveLocked tells an envelope client its replay is done
// ({"event":"live"}). Plain clients get nothing: their next frame is simply
// the next message. c.mu held.
func (c *client) liveLocked() {
	if c.envelope {
		c.feed.push(liveEvent()) // a few bytes: a catching-up feed has room
	}
}

// gap handles a resume point no longer stored (from..to are gone). An
// envelope client is told ({"event":"gap",...}) and goes on; a plain one is
// closed with 4410, since it cannot be told what it missed. It reports
// whether the client goes on.
func (c *client) gap(from, to uint64) bool {
	c.m.Gaps.Inc()
	c.log.Info("resume point no longer stored", "from", from, "to", to, "envelope", c.envelope)
	if !c.envelope {
		c.close(StatusResumeExpired, reasonResumeExpired, metrics.DisconnectResumeExpired)
		return false
	}
	c.mu.Lock()
	if !c.closed {
		c.feed.push(gapEvent(from, to))
		c.kickLocked()
	}
	c.mu.Unlock()
	return true
}

// kickLocked makes sure a writer will send what is queued; c.mu held.
func (c *client) kickLocked() {
	if c.feed.queued() == 0 {
		return
	}
	if !c.startWriterLocked() {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// startCatchUpLocked starts the client's catch-up goroutine unless it runs,
// the client is closed or not yet connected (serveClient starts it then,
// so it never outlives a failed upgrade). c.mu held.
func (c *client) startCatchUpLocked() {
	d := &c.dur
	if c.closed || c.conn == nil || !d.catching || d.running {
		return
	}
	d.running = true
	c.wg.Add(1) // under c.mu: ordered before serve's wg.Wait
	go c.catchUp()
}

// isDurable reports whether the client watches a durable channel.
func (c *client) isDurable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dur.ch != nil
}

// beDurable marks a client of a durable channel before it joins: not
// live until position has placed it.
func (c *client) beDurable() {
	c.dur.catching = true
	c.dur.drained = make(chan struct{}, 1)
}

// startCatchUp is startCatchUpLocked for serveClient.
func (c *client) startCatchUp() {
	c.mu.Lock()
	if c.dur.ch != nil {
		c.startCatchUpLocked()
	}
	c.mu.Unlock()
}

// drainedLocked is called by the writer after a batch: a catching-up
// client may have room again. c.mu held.
func (c *client) drainedLocked() {
	if c.dur.catching {
		select {
		case c.dur.drained <- struct{}{}:
		default:
		}
	}
}

// waitRoom waits until the client's queue is at most half its budget (in
// bytes and in messages), so a refill is worth its locks. It reports false
// once the client is closed.
func (c *client) waitRoom() bool {
	for {
		c.mu.Lock()
		closed, room := c.closed, c.feed.bytes <= c.lim.queueBytes/2 && c.feed.msgs <= c.lim.queueMsgs/2
		c.mu.Unlock()
		if closed {
			return false
		}
		if room {
			return true
		}
		select {
		case <-c.dur.drained:
		case <-c.closing:
			return false
		}
	}
}

// waitFits waits until f fits in the client's queue. It reports false
// once the client is closed.
func (c *client) waitFits(f *message) bool {
	for {
		c.mu.Lock()
		closed, fits := c.closed, c.feed.fits(f)
		c.mu.Unlock()
		if closed {
			return false
		}
		if fits {
			return true
		}
		select {
		case <-c.dur.drained:
		case <-c.closing:
			return false
		}
	}
}

// catchUp queues what a catching-up client has not seen, at its pace:
// from the ring while it covers the client's position, else from the
// stream, until it has everything and is live again.
func (c *client) catchUp() {
	defer c.wg.Done()
	ch := c.dur.ch
	counted := false // this catch-up's first fill from the ring is counted
	for {
		if !c.waitRoom() {
			return
		}
		ch.ringMu.Lock()
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			ch.ringMu.Unlock()
			return
		}
		fromRing := c.dur.start.kind == resumeNone && ch.ring.covers(c.dur.pos)
		if fromRing && !counted && !c.dur.replay {
			counted = true // (a resume's ring fill was counted by position)
			c.m.Replays.Inc(metrics.ReplayRing)
		}
		if fromRing && ch.fillLocked(c) {
			c.dur.running = false
			c.mu.Unlock()
			ch.ringMu.Unlock()
			return
		}
		c.mu.Unlock()
		ch.ringMu.Unlock()
		if !fromRing && !c.readStream(ch) {
			return
		}
	}
}

// readStream queues for the client what the stream holds after its
// position (or from its resume point), through an ordered consumer of its
// own, at the client's pace, until its position is covered by the ring (or
// the stream has nothing more). It reports false once the client is
// closed.
func (c *client) readStream(ch *channel) bool {
	h := ch.h
	c.mu.Lock()
	pos, start := c.dur.pos, c.dur.start
	c.mu.Unlock()
	ch.ringMu.Lock()
	floor0 := ch.ring.floor
	ch.ringMu.Unlock()

	select {
	case h.readers <- struct{}{}:
		defer func() { <-h.readers }()
	case <-c.closing:
		return false
	}
	c.m.Replays.Inc(metrics.ReplayStream)
	ctx, cancel := context.WithTimeout(context.Background(), jsTimeout)
	defer cancel()
	st, err := h.js.Stream(ctx, h.stream.Name())
	if err != nil {
		return c.streamFailed(err)
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{ch.subject},
		InactiveThreshold: 30 * time.Second,
		MaxResetAttempts:  3,
	}
	// The resume point is gone when the stream no longer holds the
	// sequence after it, or (a channel's own limit removes its oldest
	// messages from the middle of the stream) no longer holds the point
	// itself. Then from..to are reported missing.
	var gapFrom, gapTo uint64
	gapOpen := false
	switch start.kind {
	case resumeTime:
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start.t
	case resumeLast:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	default:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, pos+1
		first := st.CachedInfo().State.FirstSeq
		switch {
		case pos+1 < first:
			gapFrom, gapTo = pos+1, first-1
		case pos > 0 && pos >= first:
			if _, err := st.GetMsg(ctx, pos); errors.Is(err, jetstream.ErrMsgNotFound) {
				gapFrom, gapOpen = pos+1, true
			}
		}
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return c.streamFailed(err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), jsTimeout)
		_ = h.js.DeleteConsumer(dctx, h.stream.Name(), cons.CachedInfo().Name)
		dcancel()
	}()
	pending := cons.CachedInfo().NumPending
	skip := uint64(0)
	if start.kind == resumeLast && pending > uint64(start.last) {
		skip = pending - uint64(start.last)
	}
	if gapTo > 0 && !c.gap(gapFrom, gapTo) {
		return false
	}
	c.mu.Lock()
	c.dur.start = resume{}
	c.mu.Unlock()

	if pending > 0 {
		it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(jsPrefetch, jsPrefetchBytes))
		if err != nil {
			return c.streamFailed(err)
		}
		defer it.Stop()
		// A close ends a wait for the next message at once.
		closed, stop := context.WithCancel(context.Background())
		defer stop()
		go func() {
			select {
			case <-c.closing:
				stop()
			case <-closed.Done():
			}
		}()
		misses := 0
		for pending > 0 {
			if !c.waitRoom() {
				return false
			}
			nctx, ncancel := context.WithTimeout(closed, jsNextWait)
			m, err := it.Next(jetstream.NextContext(nctx))
			ncancel()
			if closed.Err() != nil {
				return false
			}
			if (errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)) && misses < jsNextTries {
				misses++
				continue
			}
			if err != nil {
				return c.streamFailed(err)
			}
			misses = 0
			md, err := m.Metadata()
			if err != nil {
				return c.streamFailed(err)
			}
			pending = md.NumPending
			if skip > 0 {
				skip--
				continue
			}
			msg := encodeJS(ch.name, m, md)
			if gapOpen {
				gapOpen = false
				if msg.seq > gapFrom && !c.gap(gapFrom, msg.seq-1) {
					return false
				}
			}
			ch.ringMu.Lock()
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				ch.ringMu.Unlock()
				return false
			}
			if msg.seq <= c.dur.pos {
				c.mu.Unlock()
				ch.ringMu.Unlock()
				continue
			}
			f := c.frame(msg)
			if !c.feed.fits(f) {
				// A message larger than the free half of the budget waits
				// for the queue to empty (an empty queue takes any).
				c.mu.Unlock()
				ch.ringMu.Unlock()
				if !c.waitFits(f) {
					return false
				}
				ch.ringMu.Lock()
				c.mu.Lock()
				if c.closed {
					c.mu.Unlock()
					ch.ringMu.Unlock()
					return false
				}
			}
			c.feed.push(f)
			c.dur.pos = msg.seq
			c.kickLocked()
			covered := ch.ring.covers(c.dur.pos)
			c.mu.Unlock()
			ch.ringMu.Unlock()
			if covered {
				return true
			}
		}
	}
	// The stream had nothing more when the reader started: nothing of the
	// channel up to floor0 (all stored before that) is left to read.
	if gapOpen && floor0 >= gapFrom && !c.gap(gapFrom, floor0) {
		return false
	}
	ch.ringMu.Lock()
	c.mu.Lock()
	if start.kind == resumeTime && c.dur.pos == 0 {
		if p, ok := ch.ring.before(start.t); ok && p > floor0 {
			floor0 = p
		}
	}
	c.dur.pos = max(c.dur.pos, floor0)
	c.mu.Unlock()
	ch.ringMu.Unlock()
	return true
}

// streamFailed ends a client whose history could not be read.
func (c *client) streamFailed(err error) bool {
	if c.close(websocket.StatusServiceRestart, reasonStreamRead, metrics.DisconnectUpstreamRead) {
		c.log.Warn("reading a durable channel from the stream failed", "err", err)
	}
	return false
}
