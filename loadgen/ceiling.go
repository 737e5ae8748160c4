package loadgen

import (
	"bufio"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"

	"github.com/relaydev/relay/shared/tcpproto"
)

// ceilingQueue is the most messages a ceiling receiver may fall behind by,
// like relay's RELAY_FANOUT_CLIENT_QUEUE default.
const ceilingQueue = 1024

// Ceiling is the raw-TCP reference: the same stream, from the same senders
// to the same number of receivers, with nothing but TCP in between. Senders
// connect to SenderAddr and send "CHANNEL\n" (answered "+OK\n", like
// ingest's handshake listener), then lines; receivers connect to
// ReceiverAddr, send "CHANNEL\n", and read "+OK\n" (from then on they
// get every message, like relay's 101) and then lines. Each line is copied once
// and shared by every receiver of the channel, which has a bounded queue and
// a writer that sends everything queued with one write: relay's own design
// without NATS, HTTP and WebSocket framing, so relay's figures can be stated
// as a fraction of what the machine does with plain sockets.
type Ceiling struct {
	senders, receivers net.Listener

	mu    sync.Mutex
	chans map[string][]*ceilingConn
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartCeiling listens on two free loopback ports.
func StartCeiling() (*Ceiling, error) {
	c := &Ceiling{chans: map[string][]*ceilingConn{}, conns: map[net.Conn]struct{}{}}
	var err error
	if c.senders, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if c.receivers, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		c.senders.Close()
		return nil, err
	}
	c.wg.Add(2)
	go c.accept(c.senders, c.serveSender)
	go c.accept(c.receivers, c.serveReceiver)
	return c, nil
}

// SenderAddr is where senders connect.
func (c *Ceiling) SenderAddr() string { return c.senders.Addr().String() }

// ReceiverAddr is where receivers connect.
func (c *Ceiling) ReceiverAddr() string { return c.receivers.Addr().String() }

// Close stops the listeners and every connection, and waits for them.
func (c *Ceiling) Close() error {
	c.senders.Close()
	c.receivers.Close()
	c.mu.Lock()
	for conn := range c.conns {
		conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

func (c *Ceiling) accept(ln net.Listener, serve func(net.Conn)) {
	defer c.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.conns[conn] = struct{}{}
		c.wg.Add(1)
		c.mu.Unlock()
		go func() {
			defer c.wg.Done()
			serve(conn)
			conn.Close()
			c.mu.Lock()
			delete(c.conns, conn)
			c.mu.Unlock()
		}()
	}
}

func readChannel(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// serveSender reads lines and broadcasts each to the channel's receivers.
func (c *Ceiling) serveSender(conn net.Conn) {
	br := bufio.NewReaderSize(conn, 32<<10)
	name, err := readChannel(br)
	if err != nil {
		return
	}
	if _, err := conn.Write(tcpproto.OKLine); err != nil {
		return
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		// One copy per message, shared by every receiver (as NATS hands
		// relay one buffer per message).
		msg := append([]byte(nil), line...)
		c.mu.Lock()
		rs := c.chans[name]
		c.mu.Unlock()
		for _, r := range rs {
			r.enqueue(msg)
		}
	}
}

// ceilingBufs holds the writers' 64 KiB batch buffers between batches.
var ceilingBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// ceilingConn is one receiver: a bounded queue and its writer.
type ceilingConn struct {
	conn net.Conn
	wake chan struct{}

	mu     sync.Mutex
	queue  [][]byte
	spare  [][]byte
	closed bool
}

func (r *ceilingConn) enqueue(msg []byte) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	if len(r.queue) >= ceilingQueue {
		// Like relay: a receiver that cannot take a message is cut off.
		r.closed = true
		r.mu.Unlock()
		r.conn.Close()
		return
	}
	r.queue = append(r.queue, msg)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (c *Ceiling) serveReceiver(conn net.Conn) {
	br := bufio.NewReader(conn)
	name, err := readChannel(br)
	if err != nil {
		return
	}
	r := &ceilingConn{conn: conn, wake: make(chan struct{}, 1)}
	c.mu.Lock()
	// Copy on write: the broadcast loop reads the slice without the lock.
	rs := append([]*ceilingConn(nil), c.chans[name]...)
	c.chans[name] = append(rs, r)
	c.mu.Unlock()
	defer c.remove(name, r)
	// Registered: from now on it gets every message (like relay's 101).
	if _, err := conn.Write(tcpproto.OKLine); err != nil {
		return
	}

	// The receiver never sends anything after its channel line: a read
	// returning means it has gone.
	go func() {
		_, _ = io.Copy(io.Discard, br)
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		conn.Close()
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}()
	for range r.wake {
		// As relay's writers do: yield once so the broadcaster queues the
		// rest of the burst, then send it with one write. Without it relay
		// batched better than its own reference.
		runtime.Gosched()
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return
		}
		batch := r.queue
		r.queue, r.spare = r.spare[:0], nil
		r.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		// Copied into one buffer and written once per 64 KiB, as relay's
		// wsframe.WriteFrames does: for small messages cheaper than writev's
		// per-iovec work.
		bp := ceilingBufs.Get().(*[]byte)
		buf := (*bp)[:0]
		var err error
		for _, m := range batch {
			if len(buf)+len(m) > cap(buf) && len(buf) > 0 {
				if _, err = conn.Write(buf); err != nil {
					break
				}
				buf = buf[:0]
			}
			if len(m) > cap(buf) {
				if _, err = conn.Write(m); err != nil {
					break
				}
				continue
			}
			buf = append(buf, m...)
		}
		if err == nil && len(buf) > 0 {
			_, err = conn.Write(buf)
		}
		*bp = buf[:0]
		ceilingBufs.Put(bp)
		clear(batch)
		r.mu.Lock()
		r.spare = batch[:0]
		r.mu.Unlock()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				conn.Close()
			}
			return
		}
	}
}

func (c *Ceiling) remove(name string, r *ceilingConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs := c.chans[name]
	out := make([]*ceilingConn, 0, len(rs))
	for _, x := range rs {
		if x != r {
			out = append(out, x)
		}
	}
	c.chans[name] = out
}
