package fanout

// msgOverhead is what one queued message costs a client beyond its
// payload: its slot in the queue (and in the writer's spare batch) and its
// share of the message value. Charging it makes the byte bounds bound memory
// for small messages too, so the message-count bound is only a backstop.
const msgOverhead = 64

// cost is what msg counts against a feed's byte bounds.
func cost(msg *message) int { return len(msg.data) + msgOverhead }

// feed is one client's place in its channel's stream: the messages queued
// for it, what they cost, and the bounds of the slow-consumer policy. Its
// queue is always a suffix of the channel's stream (every message since the
// client joined that its writer has not taken yet), which is why a channel's
// clients can share one copy of each message and together hold at most one
// hard cap of them. A feed knows no connection and has no lock: its client
// guards it with client.mu, writes what take returns, and judges, with its
// socket, whether a feed over its budget is draining (client.checkStall).
type feed struct {
	lim   clientLimits
	queue []*message
	spare []*message // the writer's previous batch, reused to avoid allocations
	msgs  int        // queued or being written
	bytes int        // their cost
}

// push queues msg unless that would take the feed past its hard bounds
// (RELAY_FANOUT_CLIENT_QUEUE messages, RELAY_FANOUT_CLIENT_QUEUE_MAX_BYTES);
// an empty feed takes any message, however large, so a big message cuts
// nobody who is keeping up. It reports whether msg was queued and whether
// the feed is now over its byte budget.
func (f *feed) push(msg *message) (ok, over bool) {
	size := cost(msg)
	if f.msgs > 0 && (f.msgs >= f.lim.queueMsgs || f.bytes+size > f.lim.maxBytes) {
		return false, f.over()
	}
	f.queue = append(f.queue, msg)
	f.msgs++
	f.bytes += size
	return true, f.over()
}

// fits reports whether msg can be queued without taking the feed past its
// byte budget (or its message bound); an empty feed takes any message. A
// durable channel's client is filled only this far: past it, it catches up.
func (f *feed) fits(msg *message) bool {
	return f.msgs == 0 || (f.bytes+cost(msg) <= f.lim.queueBytes && f.msgs < f.lim.queueMsgs)
}

// over reports whether the feed is over its byte budget
// (RELAY_FANOUT_CLIENT_QUEUE_BYTES).
func (f *feed) over() bool { return f.bytes > f.lim.queueBytes }

// queued is how many messages wait for the writer (not counting a batch
// being written).
func (f *feed) queued() int { return len(f.queue) }

// take hands the writer everything queued, in order. The batch stays
// counted against the bounds until done.
func (f *feed) take() []*message {
	batch := f.queue
	f.queue, f.spare = f.spare[:0], nil
	return batch
}

// done releases a batch from take, written or not, and keeps its slice for
// the next take.
func (f *feed) done(batch []*message) {
	for _, msg := range batch {
		f.bytes -= cost(msg)
	}
	f.msgs -= len(batch)
	clear(batch)
	f.spare = batch[:0]
}

// drop forgets what is queued: a client cut for falling behind has missed
// data, and what it would still be sent is of no use.
func (f *feed) drop() {
	clear(f.queue)
	f.queue = nil
}
