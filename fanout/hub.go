package fanout

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaydev/relay/shared/durable"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
	"github.com/relaydev/relay/shared/wsframe"
)

// ErrSubscribe is returned (wrapped) when a channel's NATS subscription could
// not be set up; the upgrade is refused with 503.
var ErrSubscribe = errors.New("fanout: subscribe failed")

// message is one NATS message as every client of a channel sends it. It is
// built once per NATS message and shared by pointer, so fanning out to N
// clients costs N pointer copies, not N payload copies. Never modified once
// shared, except env, which is set once, atomically.
type message struct {
	typ  websocket.MessageType
	data []byte
	// hdr[:hdrLen] is the frame header every client sends before data: a
	// server's frames are unmasked, so the whole frame is the same for all.
	hdr    [10]byte
	hdrLen uint8

	// channel is the concrete channel the message was published on, also
	// when it reached a wildcard subscription.
	channel string
	// seq is the JetStream stream sequence; 0 on core NATS channels.
	seq uint64
	// time is the JetStream timestamp, or when NATS delivered it to this
	// pod on core channels.
	time time.Time
	// env is the relay.v1.json frame of this message, built by the first
	// envelope client that needs it (see envelope).
	env atomic.Pointer[message]
}

// newMessage encodes the WebSocket frame header for data once (opcode:
// MessageText = 1, MessageBinary = 2, as on the wire).
func newMessage(typ websocket.MessageType, data []byte) *message {
	m := &message{typ: typ, data: data}
	m.hdrLen = uint8(len(wsframe.AppendHeader(m.hdr[:0], byte(typ), len(data), nil)))
	return m
}

// encode decides the frame type once for all clients. Relay-Format: binary
// always wins; text is honoured only for valid UTF-8, because a browser fails
// the whole connection on an invalid text frame and a receiver must never
// lose its connection to one bad payload. Without the header, valid UTF-8
// travels as text and anything else as binary.
//
// channel is the concrete channel m was published on; the time is now, as
// core NATS carries none (durable channels set seq and time from JetStream).
func encode(channel string, m *nats.Msg) *message {
	typ := websocket.MessageText
	if m.Header.Get(subjects.FormatHeader) == subjects.FormatBinary || !utf8.Valid(m.Data) {
		typ = websocket.MessageBinary
	}
	msg := newMessage(typ, m.Data)
	msg.channel, msg.time = channel, time.Now()
	return msg
}

// hub owns the channels with local clients and their NATS subscriptions.
type hub struct {
	nc             *nats.Conn
	mapper         subjects.Mapper
	m              *metrics.Fanout
	log            *slog.Logger
	pendingMsgs    int
	pendingBytes   int
	confirmTimeout time.Duration // bound for the subscription's round trip to NATS

	// Durable channels (durable.go): stream says which, js reads them.
	stream   *durable.Stream
	js       jetstream.JetStream
	ringSize int
	readers  chan struct{} // a slot per client reading the stream (maxStreamReaders)

	mu       sync.Mutex
	channels map[string]*channel             // channels with at least one client (or one joining)
	subs     map[*nats.Subscription]*channel // for NATS slow-consumer reports
}

// channel is one channel's local clients and its subscription. A channel
// value lives from its first join to its last leave; a client arriving after
// that gets a fresh channel (and subscription), so a join racing the last
// leave never lands on a subscription that is being torn down.
//
// A channel may be a pattern (sensors.*, sensors.>): then it is one NATS
// subscription for all the pattern's watchers on this pod, and each message
// names the concrete channel it was published on.
type channel struct {
	h       *hub
	name    string
	subject string
	pattern bool // name has a wildcard: message.channel comes from the subject

	// Guarded by hub.mu.
	refs int

	// ready is closed by the joiner that created the channel once sub or err
	// is set; both are read-only afterwards.
	ready chan struct{}
	sub   *nats.Subscription
	err   error

	mu      sync.RWMutex
	clients []*client // client.idx is its index here (guarded by mu)

	// A durable channel (durable.go) has an ordered consumer instead of
	// sub, and a ring of its recent messages. ringMu guards the ring and
	// orders a client's switch to live against the consumer's deliveries.
	durable  bool
	cons     jetstream.ConsumeContext
	consName string
	ringMu   sync.Mutex
	ring     *ring
}

func newHub(nc *nats.Conn, mapper subjects.Mapper, m *metrics.Fanout, log *slog.Logger, pendingMsgs, pendingBytes int, confirmTimeout time.Duration) *hub {
	return &hub{
		nc:             nc,
		mapper:         mapper,
		m:              m,
		log:            log,
		pendingMsgs:    pendingMsgs,
		pendingBytes:   pendingBytes,
		confirmTimeout: confirmTimeout,
		channels:       make(map[string]*channel),
		subs:           make(map[*nats.Subscription]*channel),
	}
}

// durable reports whether channel name is read from the durable
// channels' stream. A pattern is not, even over durable channels: it is
// watched live through core NATS (which carries durable messages too).
func (h *hub) durable(name string) bool {
	return h.js != nil && !subjects.IsPattern(name) && h.stream.Matches(name)
}

// join adds c to channel name, subscribing to its subject if c is the first
// local client. It returns once the subscription is confirmed by the NATS
// server, so every message published after join returns reaches c's queue.
// On error c is no longer in the channel.
func (h *hub) join(name string, c *client) (*channel, error) {
	h.mu.Lock()
	ch := h.channels[name]
	creator := ch == nil
	if creator {
		ch = &channel{h: h, name: name, subject: h.mapper.Subject(name), pattern: subjects.IsPattern(name),
			ready: make(chan struct{}), durable: h.durable(name)}
		h.channels[name] = ch
	}
	ch.refs++
	ch.add(c)
	h.mu.Unlock()

	switch {
	case creator && ch.durable:
		h.consume(ch)
	case creator:
		h.subscribe(ch)
	}
	// The creator bounds subscribe by confirmTimeout, so this wait is bounded too.
	<-ch.ready
	if ch.err != nil {
		h.leave(ch, c)
		return nil, ch.err
	}
	return ch, nil
}

// subscribe sets up ch's subscription and closes ch.ready.
func (h *hub) subscribe(ch *channel) {
	defer close(ch.ready)
	sub, err := h.nc.Subscribe(ch.subject, ch.deliver)
	if err == nil {
		// Deliberate limits: past them NATS drops messages for this
		// subscription and reports a slow consumer, which closes the
		// channel's clients (see slowSubscription) instead of leaving gaps.
		err = sub.SetPendingLimits(h.pendingMsgs, h.pendingBytes)
		if err == nil {
			h.mu.Lock()
			h.subs[sub] = ch
			h.mu.Unlock()
			// The round trip makes sure the server has the interest before
			// the client is told it is connected.
			err = h.nc.FlushTimeout(h.confirmTimeout)
		}
		if err != nil {
			h.mu.Lock()
			delete(h.subs, sub)
			h.mu.Unlock()
			_ = sub.Unsubscribe()
		}
	}
	if err != nil {
		ch.err = fmt.Errorf("%w: %s: %w", ErrSubscribe, ch.subject, err)
		// Later joiners should try afresh rather than inherit this failure.
		h.mu.Lock()
		if h.channels[ch.name] == ch {
			delete(h.channels, ch.name)
		}
		h.mu.Unlock()
		return
	}
	ch.sub = sub
	h.m.Subscriptions.Inc()
	h.log.Debug("subscribed", "subject", ch.subject)
}

// leave removes c from ch and unsubscribes after the last client.
func (h *hub) leave(ch *channel, c *client) {
	h.mu.Lock()
	ch.remove(c)
	ch.refs--
	last := ch.refs == 0
	if last && h.channels[ch.name] == ch {
		delete(h.channels, ch.name)
	}
	if last && ch.sub != nil {
		delete(h.subs, ch.sub)
	}
	h.mu.Unlock()
	if last && ch.cons != nil {
		h.stopConsume(ch)
		return
	}
	if !last || ch.sub == nil {
		return
	}
	// Messages still in flight for the old subscription find no clients;
	// a client that joined meanwhile has its own channel and subscription.
	if err := ch.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		h.log.Debug("unsubscribe", "subject", ch.subject, "err", err)
	}
	h.m.Subscriptions.Dec()
	h.log.Debug("unsubscribed", "subject", ch.subject)
}

// slowSubscription handles NATS reporting that it dropped messages for sub:
// every client of its channel has missed data, so each is closed with 1008
// and will reconnect knowing it has a gap.
func (h *hub) slowSubscription(sub *nats.Subscription) {
	h.m.SlowConsumers.Inc(metrics.SlowNATS)
	h.mu.Lock()
	ch := h.subs[sub]
	h.mu.Unlock()
	subject := sub.Subject
	dropped, _ := sub.Dropped()
	if ch == nil {
		h.log.Warn("nats slow consumer on a subscription no longer in use", "subject", subject, "dropped", dropped)
		return
	}
	n := ch.closeAll(websocket.StatusPolicyViolation, reasonSlowConsumer, disconnectNATSSlowConsumer)
	h.log.Warn("nats slow consumer: messages dropped, closing the channel's clients",
		"channel", ch.name, "dropped", dropped, "clients", n)
}

// deliver is the NATS callback: one goroutine per subscription, so a
// channel's messages are handled in order. It never blocks on a client.
func (ch *channel) deliver(m *nats.Msg) {
	name := ch.name
	if ch.pattern {
		// A subject a channel name cannot make (a direct NATS publisher
		// may use any) is delivered too, named as it is: the pattern's
		// watchers asked for whatever NATS matches.
		name = ch.h.mapper.ChannelPart(m.Subject)
	}
	msg := encode(name, m)
	ch.h.m.MessagesIn.Inc()
	ch.mu.RLock()
	for _, c := range ch.clients {
		if !c.enqueue(msg) {
			c.cutSlow()
		}
	}
	ch.mu.RUnlock()
}

// closeAll starts closing every client of ch and returns how many it closed.
func (ch *channel) closeAll(code websocket.StatusCode, text string, reason metrics.FanoutDisconnect) int {
	n := 0
	ch.mu.RLock()
	for _, c := range ch.clients {
		if c.close(code, text, reason) {
			n++
		}
	}
	ch.mu.RUnlock()
	return n
}

func (ch *channel) add(c *client) {
	ch.mu.Lock()
	c.idx = len(ch.clients)
	ch.clients = append(ch.clients, c)
	ch.mu.Unlock()
}

func (ch *channel) remove(c *client) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	i, last := c.idx, len(ch.clients)-1
	if i < 0 || i > last || ch.clients[i] != c {
		return
	}
	ch.clients[i] = ch.clients[last]
	ch.clients[i].idx = i
	ch.clients[last] = nil
	ch.clients = ch.clients[:last]
	c.idx = -1
}
