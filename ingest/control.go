package ingest

import (
	"cmp"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
)

// Talking back (docs/architecture.md): WebSocket clients of a control
// channel publish to <prefix>.ctl.<channel>; ingest reads that subject while
// the channel has a sender here and writes each message to every sender
// connection of the channel, framed for its listener. Each sender has a
// bounded queue and its own writer, so one that does not read loses its
// newest control messages (counted) and slows nobody, itself included: the
// pump that reads from it never writes.
//
// Presence: ingest announces each channel's sender count on this pod on
// <prefix>.ev.<channel> when it changes (within presenceBatch), and repeats it every
// RELAY_PRESENCE_REFRESH so a fanout that starts later learns it.

const (
	// controlWriteSlice bounds one attempt to write to a sender. A write
	// that times out keeps what it did not write ahead of everything else
	// (senderConn.send), so frames are never cut; the writer tries again.
	controlWriteSlice = time.Second
	// defaultControlQueueBytes is RELAY_INGEST_CONTROL_QUEUE_BYTES's
	// default, for Options that leave it 0.
	defaultControlQueueBytes = 1 << 20
	// presenceTTLFactor: a count not repeated for this many refresh
	// intervals is forgotten by the fanouts (an ingest that died).
	presenceTTLFactor = 3
)

// router tracks the channels with senders on this pod: their control
// subscriptions and their presence.
type router struct {
	nc         *nats.Conn
	mapper     subjects.Mapper
	log        *slog.Logger
	m          *metrics.Ingest
	patterns   []string // RELAY_CONTROL_CHANNELS
	queueLen   int
	queueBytes int
	refresh    time.Duration
	pod        string

	mu    sync.Mutex
	chans map[string]*senderSet
	// dirty: channels whose count changed since the last announcement;
	// kick wakes run to announce them (after presenceBatch).
	dirty map[string]struct{}
	kick  chan struct{}
	// query wakes run to announce every count at once: a fanout that has
	// just started asked (subjects.PresenceQuery).
	query    chan struct{}
	querySub *nats.Subscription
	// pubMu orders announcements: one publisher at a time, each with the
	// counts as they are when it publishes.
	pubMu sync.Mutex
}

// senderSet is one channel's senders on this pod.
type senderSet struct {
	r       *router
	name    string
	writers map[*senderConn]*ctlWriter // guarded by router.mu
	// list is what the control subscription's callback reads: a copy of
	// writers' values, replaced under router.mu.
	list atomic.Pointer[[]*ctlWriter]
	sub  *nats.Subscription // nil on channels that are not control channels
}

func newRouter(nc *nats.Conn, mapper subjects.Mapper, log *slog.Logger, m *metrics.Ingest, c config.Control) *router {
	host, _ := os.Hostname()
	if host == "" {
		host = "ingest"
	}
	refresh := c.PresenceRefresh
	if refresh <= 0 {
		refresh = 10 * time.Second
	}
	return &router{
		nc: nc, mapper: mapper, log: log, m: m,
		patterns:   c.Patterns(),
		queueLen:   max(c.IngestControlQ, 1),
		queueBytes: cmp.Or(c.IngestControlB, defaultControlQueueBytes),
		refresh:    refresh,
		// A restarted pod is a new pod: its predecessor's counts expire.
		pod:   host + "-" + nuid.Next()[:8],
		chans: map[string]*senderSet{},
		dirty: map[string]struct{}{},
		kick:  make(chan struct{}, 1),
		query: make(chan struct{}, 1),
	}
}

// isControl reports whether WebSocket clients may talk back on channel.
func (r *router) isControl(channel string) bool { return auth.MatchAny(r.patterns, channel) }

// join adds sender c of channel: it is counted, and on a control channel
// it gets a writer for the channel's control messages.
func (r *router) join(c *senderConn, channel string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := r.chans[channel]
	if set == nil {
		set = &senderSet{r: r, name: channel, writers: map[*senderConn]*ctlWriter{}}
		r.chans[channel] = set
		if r.isControl(channel) {
			sub, err := r.nc.Subscribe(r.mapper.ControlSubject(channel), set.deliver)
			if err != nil {
				r.log.Warn("ingest: cannot read the channel's control messages", "channel", channel, "err", err)
			} else {
				set.sub = sub
				r.m.ControlSubscriptions.Inc()
			}
		}
	}
	var w *ctlWriter
	if set.sub != nil {
		w = newCtlWriter(c, r.queueLen, r.queueBytes, r.m)
	}
	set.writers[c] = w
	if w != nil {
		set.publishList()
	}
	r.changed(channel)
}

// leave removes sender c of channel, stops its writer (its queued control
// messages are dropped and counted) and, after the channel's last sender
// here, stops reading the channel's control subject.
func (r *router) leave(c *senderConn, channel string) {
	r.mu.Lock()
	set := r.chans[channel]
	if set == nil {
		r.mu.Unlock()
		return
	}
	w, ok := set.writers[c]
	if !ok {
		r.mu.Unlock()
		return
	}
	delete(set.writers, c)
	if w != nil {
		set.publishList()
	}
	n := len(set.writers)
	if n == 0 {
		delete(r.chans, channel)
		if set.sub != nil {
			_ = set.sub.Unsubscribe()
			r.m.ControlSubscriptions.Dec()
		}
	}
	r.changed(channel)
	r.mu.Unlock()
	if w != nil {
		w.close()
	}
}

// publishList refreshes the list the subscription callback reads; router.mu
// held. Only control channels have one (a copy per arrival or departure,
// which the callback reads without a lock).
func (set *senderSet) publishList() {
	list := make([]*ctlWriter, 0, len(set.writers))
	for _, w := range set.writers {
		if w != nil {
			list = append(list, w)
		}
	}
	set.list.Store(&list)
}

// deliver is the control subscription's callback: it queues the message for
// every sender of the channel and never blocks. NATS hands each message its
// own buffer, so the senders share it.
func (set *senderSet) deliver(m *nats.Msg) {
	if l := set.list.Load(); l != nil {
		for _, w := range *l {
			w.enqueue(m.Data)
		}
	}
}

// presenceBatch is how long arrivals and departures are gathered before
// they are announced: under connection churn a channel costs one event per
// batch, not two per connection.
const presenceBatch = 20 * time.Millisecond

// changed marks channel's count as changed; router.mu held.
func (r *router) changed(channel string) {
	r.dirty[channel] = struct{}{}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// announce publishes the count of each of channels (every channel with
// senders when all), as it is now.
func (r *router) announce(all bool) {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	type count struct {
		channel string
		senders int
	}
	r.mu.Lock()
	var counts []count
	if all {
		counts = make([]count, 0, len(r.chans)+len(r.dirty))
		for name, set := range r.chans {
			counts = append(counts, count{name, len(set.writers)})
		}
	}
	for name := range r.dirty {
		if set := r.chans[name]; set == nil {
			counts = append(counts, count{name, 0}) // the last sender left
		} else if !all {
			counts = append(counts, count{name, len(set.writers)})
		}
	}
	clear(r.dirty)
	r.mu.Unlock()
	ttl := (presenceTTLFactor * r.refresh).Milliseconds()
	var b []byte
	for _, c := range counts {
		b = appendPresence(b[:0], r.pod, c.senders, ttl)
		if err := r.nc.Publish(r.mapper.EventSubject(c.channel), b); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			// The next refresh repeats it.
			r.log.Debug("ingest: presence not published", "channel", c.channel, "err", err)
		}
	}
}

// appendPresence encodes subjects.Presence without reflection (it runs at
// every batch of arrivals and departures). pod is ours: no characters that
// need escaping (host name and nuid), which the test checks.
func appendPresence(b []byte, pod string, senders int, ttlMillis int64) []byte {
	b = append(b, `{"pod":`...)
	b = strconv.AppendQuote(b, pod)
	b = append(b, `,"senders":`...)
	b = strconv.AppendInt(b, int64(senders), 10)
	b = append(b, `,"ttl_ms":`...)
	b = strconv.AppendInt(b, ttlMillis, 10)
	return append(b, '}')
}

// presenceQueryGap is the least time between two full announcements made
// for fanouts' queries, however many fanouts start at once.
const presenceQueryGap = time.Second

// listenForQueries subscribes to the fanouts' presence queries. Without it
// a fanout learns the counts at the next refresh.
func (r *router) listenForQueries() {
	sub, err := r.nc.Subscribe(r.mapper.PresenceQuery(), func(*nats.Msg) {
		select {
		case r.query <- struct{}{}:
		default:
		}
	})
	if err != nil {
		r.log.Warn("ingest: fanouts that start will learn sender counts at the next refresh", "err", err)
		return
	}
	r.querySub = sub
}

// run announces changes (gathered for presenceBatch), every count each
// refresh interval, and every count when a fanout asks (at most once per
// presenceQueryGap), until stop closes.
func (r *router) run(stop <-chan struct{}) {
	r.listenForQueries()
	defer func() {
		if r.querySub != nil {
			r.querySub.Unsubscribe()
		}
	}()
	t := time.NewTicker(r.refresh)
	defer t.Stop()
	batch := time.NewTimer(0)
	<-batch.C
	var lastFull time.Time
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.announce(true)
			lastFull = time.Now()
		case <-r.query:
			// Wait out the gap rather than skip: the asking fanout may have
			// subscribed just after the last full announcement.
			if wait := presenceQueryGap - time.Since(lastFull); wait > 0 {
				batch.Reset(wait)
				select {
				case <-stop:
					return
				case <-batch.C:
				}
			}
			r.announce(true)
			lastFull = time.Now()
		case <-r.kick:
			batch.Reset(presenceBatch)
			select {
			case <-stop:
				return
			case <-batch.C:
			}
			r.announce(false)
		}
	}
}

// flush announces what changed now (at shutdown, before the NATS
// connection closes: the fanouts learn the departures at once).
func (r *router) flush() { r.announce(false) }

// ctlWriter writes one sender's control messages: a bounded queue filled by
// the subscription callback, drained by one goroutine through the sender's
// serialized writer (senderConn.send), so +ACK and -ERR lines never land
// inside a control frame.
type ctlWriter struct {
	c          *senderConn
	written    prometheus.Counter // relay_ingest_control_messages_total{result="written"}
	dropped    prometheus.Counter // {result="dropped"}
	framing    config.Framing
	queueLen   int
	queueBytes int

	mu     sync.Mutex
	queue  [][]byte
	bytes  int
	closed bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newCtlWriter(c *senderConn, queueLen, queueBytes int, m *metrics.Ingest) *ctlWriter {
	w := &ctlWriter{c: c, framing: c.spec.Framing, queueLen: queueLen, queueBytes: queueBytes,
		written: m.ControlMessages.With(metrics.ControlWritten), dropped: m.ControlMessages.With(metrics.ControlDropped),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// enqueue queues data unless the queue is full: then the newest (data) is
// dropped and counted. It never blocks.
func (w *ctlWriter) enqueue(data []byte) {
	w.mu.Lock()
	if w.closed || len(w.queue) >= w.queueLen || (len(w.queue) > 0 && w.bytes+len(data) > w.queueBytes) {
		w.mu.Unlock()
		w.dropped.Inc()
		w.c.s.logRefusal("control_dropped", "ingest: control message dropped: the sender does not read them (queue full)",
			"remote", w.c.remote.String(), "listener", w.c.spec.Addr, "queue", w.queueLen)
		return
	}
	w.queue = append(w.queue, data)
	w.bytes += len(data)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// close stops the writer; what it still holds is dropped and counted.
func (w *ctlWriter) close() {
	close(w.stop)
	<-w.done
}

func (w *ctlWriter) run() {
	defer close(w.done)
	var buf []byte
	var batch int // messages in buf, not yet taken by the connection
	defer func() {
		w.mu.Lock()
		w.closed = true
		dropped := batch + len(w.queue)
		w.queue = nil
		w.mu.Unlock()
		w.dropped.Add(float64(dropped))
	}()
	for {
		if batch == 0 {
			select {
			case <-w.stop:
				return
			case <-w.wake:
			}
			w.mu.Lock()
			queue := w.queue
			w.queue, w.bytes = nil, 0
			w.mu.Unlock()
			buf = buf[:0]
			for _, data := range queue {
				buf = appendFrame(buf, w.framing, data)
			}
			batch = len(queue)
			if batch == 0 {
				continue
			}
		}
		// Everything queued goes out in one write (a syscall per message
		// is the cost to beat).
		start := time.Now()
		taken, err := w.c.send(buf, controlWriteSlice)
		if taken {
			w.written.Add(float64(batch))
			batch = 0
			if len(buf) > 64<<10 {
				buf = nil // do not keep a big batch's buffer for good
			}
			continue
		}
		if err != nil && !isTimeout(err) {
			return // the connection is gone
		}
		if time.Since(start) < controlWriteSlice/2 {
			// A timeout at once: the connection refuses every write now (a
			// TLS connection stays broken after a write timeout). Nothing
			// more can reach this sender; what comes is dropped, counted.
			return
		}
		// The sender is not reading: keep this batch (the queue fills and
		// drops the newest meanwhile) and try again.
		select {
		case <-w.stop:
			return
		default:
		}
	}
}

// appendFrame frames a control message the way the listener frames its
// sender's messages: line: payload and \n; len32: 4-byte big-endian length
// and payload; raw: the payload as it is.
func appendFrame(b []byte, framing config.Framing, data []byte) []byte {
	switch framing {
	case config.FramingLen32:
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	case config.FramingLine:
		b = append(b, data...)
		return append(b, '\n')
	default:
		return append(b, data...)
	}
}
