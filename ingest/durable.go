package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"golang.org/x/sync/semaphore"

	"github.com/relaydev/relay/shared/tcpproto"
)

// Durable channels (docs/architecture.md, Durable channels): a message on a
// durable channel is published to JetStream with an ack, asynchronously, so
// a sender is not held up by a round trip per message. Each connection has
// a storer: the pump publishes and queues the ack future; the storer's
// goroutine takes the futures in order, counts what is stored (the N of
// `+ACK N` and of "N messages accepted"), and sends again a message whose
// ack failed or did not come. Every message carries a Nats-Msg-Id made of
// an id unique to the connection and the message's number in it, so a
// message sent again is stored once (within the stream's duplicate window).
const (
	// connWindow and connWindowBytes bound one connection's messages
	// awaiting an ack; RELAY_INGEST_DURABLE_IN_FLIGHT bounds the process's.
	connWindow      = 256
	connWindowBytes = 1 << 20
	// ackTimeout is how long an ack may take before the message is sent again.
	ackTimeout = 5 * time.Second
	// storeAttempts is how often a message is sent again before the sender
	// is told `-ERR store failed`; retryWait is the first pause between.
	storeAttempts = 3
	retryWait     = 100 * time.Millisecond
	// ackEvery is the most often `+ACK N` is written.
	ackEvery = 100 * time.Millisecond
	// drainAcks bounds the wait for a closing connection's last acks
	// (outside shutdown, which has its own deadline).
	drainAcks = 15 * time.Second
	// ackWriteTimeout: a sender that does not read its +ACK lines for this
	// long gets no more of them.
	ackWriteTimeout = 10 * time.Second
)

// errStore: the stream would not store a message after retries.
var errStore = errors.New("ingest: store failed")

// newJetStream returns the JetStream publisher the server's storers share.
func newJetStream(nc *nats.Conn, inFlight int) (jetstream.JetStream, error) {
	return jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(inFlight),
		jetstream.WithPublishAsyncTimeout(ackTimeout))
}

// pending is a message published and not yet known to be stored.
type pending struct {
	f    jetstream.PubAckFuture
	msg  *nats.Msg
	cost int64 // its share of connWindowBytes
}

// storer publishes one connection's durable messages and follows their acks.
type storer struct {
	c       *senderConn
	js      jetstream.JetStream
	idBase  string // Nats-Msg-Id is idBase + message number
	seq     uint64 // the last message number used (pump goroutine only)
	window  chan struct{}
	bytes   *semaphore.Weighted
	queue   chan pending // in publish order
	pubMu   sync.Mutex   // held while publishing and queueing; held by run while it sends again, so nothing overtakes
	stored  atomic.Uint64
	ctx     context.Context // ends at failure, the shutdown's hard deadline or when the last acks take too long
	cancel  context.CancelFunc
	done    chan struct{} // run has returned
	errOnce sync.Once
	err     error // why storing stopped; read after done
}

// newStorer starts the storer of c's messages on channel; h's session, if
// any, numbers them.
func newStorer(c *senderConn, channel string, h handshake) *storer {
	ctx, cancel := context.WithCancel(c.s.hardCtx)
	idBase, seq := nuid.Next()+".", uint64(0)
	if h.Session != "" {
		// The number before FIRST: message k of the connection is FIRST+k-1.
		idBase, seq = tcpproto.SessionMsgIDPrefix(channel, h.Session), h.First-1
	}
	st := &storer{
		c:      c,
		js:     c.s.js,
		idBase: idBase,
		seq:    seq,
		window: make(chan struct{}, min(connWindow, c.s.cfg.DurableInFlight)),
		bytes:  semaphore.NewWeighted(connWindowBytes),
		queue:  make(chan pending, connWindow),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go st.run()
	return st
}

// send publishes msg (owned by the storer from now on) with acks. It
// blocks while the connection's window is full; an error means msg was not
// published (the pump may try again) or, wrapping errStore, that storing
// has failed for good.
func (st *storer) send(msg *nats.Msg) error {
	cost := min(int64(max(len(msg.Data), 1)), connWindowBytes)
	select {
	case st.window <- struct{}{}:
	case <-st.ctx.Done():
		return st.stopped()
	}
	if err := st.bytes.Acquire(st.ctx, cost); err != nil {
		<-st.window
		return st.stopped()
	}
	st.pubMu.Lock()
	// At RELAY_INGEST_DURABLE_IN_FLIGHT nats.go stalls the publish until an
	// ack frees a slot (backpressure: this sender is not read meanwhile); its
	// default gives up after 200 ms, which under load turned a full window
	// into failed publishes that publish() then held and retried (5-7 of
	// 12,000 in TestDurableInFlightBound under -race).
	f, err := st.js.PublishMsgAsync(msg, jetstream.WithStallWait(ackTimeout))
	if err != nil {
		st.pubMu.Unlock()
		st.bytes.Release(cost)
		<-st.window
		return err
	}
	st.c.s.m.AcksPending.Inc()
	st.queue <- pending{f: f, msg: msg, cost: cost} // never blocks: the window is smaller
	st.pubMu.Unlock()
	return nil
}

// stopped is send's error once ctx has ended: the failure if there was one,
// else a shutdown error the pump's hold turns into "server shutting down".
func (st *storer) stopped() error {
	select {
	case <-st.done:
		if st.err != nil {
			return st.err
		}
	default:
	}
	return errors.New("ingest: durable publishing stopped at the shutdown deadline")
}

// message builds the next durable message: its own copy of data (the
// framer reuses its buffer, and a retry needs the bytes) and headers.
func (st *storer) message(subject string, data []byte, format nats.Header) *nats.Msg {
	st.seq++
	h := nats.Header{jetstream.MsgIDHeader: []string{st.idBase + strconv.FormatUint(st.seq, 10)}}
	for k, v := range format {
		h[k] = v
	}
	return &nats.Msg{Subject: subject, Data: append([]byte(nil), data...), Header: h}
}

// run follows acks in publish order until the queue is closed and empty,
// or ctx ends.
func (st *storer) run() {
	defer close(st.done)
	holding := false // pubMu held since a failed ack: keep the order
	// resent: the last failed ack was cured by a resend just now. The acks
	// of a window all fail together (a leader change, a reconnect); once the
	// stream answers again the rest are resent at once, not each after a
	// pause (that pause cost 100 ms per message: ~1,000 messages in flight
	// at a leader change took 100 s to resend).
	resent := false
	defer func() {
		if holding {
			st.pubMu.Unlock()
		}
	}()
	for p := range st.queue {
		err := st.await(p)
		if err != nil && st.ctx.Err() == nil {
			if !holding {
				st.pubMu.Lock()
				holding = true
			}
			err = st.retry(p, err, !resent)
			resent = err == nil
		}
		st.bytes.Release(p.cost)
		<-st.window
		st.c.s.m.AcksPending.Dec()
		if err != nil {
			st.fail(err)
			st.abandon()
			return
		}
		st.stored.Add(1)
		st.c.s.m.Stored.Inc()
		if holding && len(st.queue) == 0 {
			st.pubMu.Unlock()
			holding, resent = false, false
		}
	}
}

// await waits for p's ack.
func (st *storer) await(p pending) error {
	select {
	case <-p.f.Ok():
		return nil
	case err := <-p.f.Err():
		return err
	case <-st.ctx.Done():
		return st.ctx.Err()
	}
}

// retry sends p again, with the same Nats-Msg-Id, until it is stored or
// storeAttempts have failed. A message whose first ack was lost is then
// stored once; a message the stream refuses (full with discard new, gone,
// out of space) fails with errStore. pause: wait before the first resend
// too (not when the previous failed ack was just cured by a resend).
func (st *storer) retry(p pending, err error, pause bool) error {
	s := st.c.s
	wait := retryWait
	for attempt := range storeAttempts {
		if errors.Is(err, nats.ErrDisconnected) || !s.nc.IsConnected() {
			// The ack went with the connection: wait for NATS as a held
			// publish does, then send again.
			if werr := s.waitUpstream(time.Now().Add(s.cfg.OutageHold)); werr != nil {
				return fmt.Errorf("%w: %s: %w", errHeld, p.msg.Subject, werr)
			}
		} else if (attempt > 0 || pause) && sleepCtx(st.ctx, wait) != nil {
			return st.ctx.Err()
		}
		wait *= 2
		s.m.StoreRetries.Inc()
		ctx, cancel := context.WithTimeout(st.ctx, ackTimeout)
		_, err = st.js.PublishMsg(ctx, p.msg)
		cancel()
		if err == nil {
			return nil
		}
		if st.ctx.Err() != nil {
			return st.ctx.Err()
		}
	}
	return fmt.Errorf("%w: %s: %w", errStore, p.msg.Subject, err)
}

func (st *storer) fail(err error) {
	st.errOnce.Do(func() { st.err = err })
	st.cancel()
	st.c.abortRead() // a sender that is quiet learns now, not at its next write
}

// abandon releases what is still queued after a failure: none of it
// counts as stored.
func (st *storer) abandon() {
	for {
		select {
		case p, ok := <-st.queue:
			if !ok {
				return
			}
			st.bytes.Release(p.cost)
			<-st.window
			st.c.s.m.AcksPending.Dec()
		default:
			return
		}
	}
}

// finish is called once the pump has stopped publishing: it waits, until
// deadline, for the acks still due, and returns why storing failed, if it did.
func (st *storer) finish(deadline time.Time) error {
	close(st.queue)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-st.done:
	case <-t.C:
		st.errOnce.Do(func() {
			st.err = fmt.Errorf("%w: no ack from the stream for %d messages in time", errStore, st.c.msgs-int(st.stored.Load()))
		})
		st.cancel()
		<-st.done
	}
	st.cancel()
	st.abandon()
	if !errors.Is(st.err, errStore) && !errors.Is(st.err, errHeld) {
		// Nothing failed, or the shutdown's hard deadline stopped the wait:
		// the stored count says what the sender may rely on.
		return nil
	}
	return st.err
}

// acker writes `+ACK N` to a sender that asked for it: at most every
// ackEvery while N changes, and once more at close.
type acker struct {
	c    *senderConn
	st   *storer
	stop chan struct{}
	done chan struct{}
	last uint64
	dead bool // a write failed: no more acks
}

func startAcker(c *senderConn, st *storer) *acker {
	a := &acker{c: c, st: st, stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

func (a *acker) run() {
	defer close(a.done)
	t := time.NewTicker(ackEvery)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			if n := a.st.stored.Load(); n != a.last && !a.dead {
				a.write(n)
			}
		}
	}
}

// close stops the ticker and writes the final count (even when unchanged:
// the sender waits for it).
func (a *acker) close() {
	close(a.stop)
	<-a.done
	if !a.dead {
		a.write(a.st.stored.Load())
	}
}

func (a *acker) write(n uint64) {
	if _, err := a.c.send(tcpproto.AckLine(n), ackWriteTimeout); err != nil {
		a.dead = true
		a.c.s.logRefusal("ack_write_failed", "ingest: could not write +ACK to a sender (not reading?); no more acks for it",
			"remote", a.c.conn.RemoteAddr().String(), "err", err)
		return
	}
	a.last = n
}

// sleepCtx waits d, or less when ctx ends (then it returns ctx's error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
