package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// floorRig is the machine's floor for fan-out latency: R plain loopback TCP
// connections in this process, written by GOMAXPROCS goroutines that each
// own a share of them (so every core writes), and read by R goroutines.
// Nothing else runs: no relay, no NATS, no WebSocket framing. send writes
// one message to every connection and returns once the last reader has it,
// so its duration is the least time a message can take to reach R
// receivers here, and the readers' latencies are the least each delivery
// can take.
type floorRig struct {
	size    int
	msg     []byte
	servers []net.Conn
	clients []net.Conn
	shards  []chan struct{} // one per writer: "write the message once"
	readers sync.WaitGroup
	writers sync.WaitGroup
	clk     clock

	lat       *latencies
	recording atomic.Bool  // readers record latencies into lat
	sentAt    atomic.Int64 // ns on clk when the current message's writes began
	remaining atomic.Int64 // deliveries of the current message still to come
	done      atomic.Pointer[chan struct{}]
	writeErr  atomic.Pointer[error]
}

func newFloorRig(receivers, size int) (rig *floorRig, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	f := &floorRig{size: size, msg: make([]byte, size), clk: newClock(), lat: newLatencies()}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	for range receivers {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
		if err != nil {
			return nil, err
		}
		f.clients = append(f.clients, c)
		s, err := ln.Accept()
		if err != nil {
			return nil, err
		}
		f.servers = append(f.servers, s)
	}
	for i, c := range f.clients {
		f.readers.Add(1)
		go f.read(i, c)
	}
	n := runtime.GOMAXPROCS(0)
	per := (receivers + n - 1) / n
	for i := range n {
		start := make(chan struct{})
		f.shards = append(f.shards, start)
		f.writers.Add(1)
		go f.write(start, f.servers[min(i*per, receivers):min((i+1)*per, receivers)])
	}
	return f, nil
}

func (f *floorRig) read(i int, c net.Conn) {
	defer f.readers.Done()
	buf := make([]byte, 4096)
	sample := make([]int64, 1)
	have := 0
	for {
		n, err := c.Read(buf)
		have += n
		now := f.clk.now()
		for ; have >= f.size; have -= f.size {
			if f.recording.Load() {
				sample[0] = now - f.sentAt.Load()
				f.lat.record(i, sample)
			}
			if f.remaining.Add(-1) == 0 {
				close(*f.done.Load())
			}
		}
		if err != nil {
			return // closed at the end
		}
	}
}

func (f *floorRig) write(start chan struct{}, share []net.Conn) {
	defer f.writers.Done()
	for range start {
		for _, s := range share {
			if _, err := s.Write(f.msg); err != nil {
				f.writeErr.CompareAndSwap(nil, &err)
			}
		}
	}
}

// send writes one message to every receiver and waits until the last one
// has it, or ctx ends, or floorTimeout passes (the rig is then to be
// closed).
func (f *floorRig) send(ctx context.Context) error {
	if p := f.writeErr.Load(); p != nil {
		return *p
	}
	done := make(chan struct{})
	f.done.Store(&done)
	f.remaining.Store(int64(len(f.clients)))
	f.sentAt.Store(f.clk.now())
	for _, s := range f.shards {
		select {
		case s <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	t := time.NewTimer(floorTimeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		if p := f.writeErr.Load(); p != nil {
			return *p
		}
		return fmt.Errorf("%d of %d receivers still without the message after %s", f.remaining.Load(), len(f.clients), floorTimeout)
	}
}

// floorTimeout bounds the wait for one message to reach every receiver.
const floorTimeout = 10 * time.Second

// close ends every connection and goroutine.
func (f *floorRig) close() {
	for _, c := range f.servers {
		c.Close()
	}
	for _, c := range f.clients {
		c.Close()
	}
	for _, s := range f.shards {
		close(s)
	}
	f.writers.Wait()
	f.readers.Wait()
}

// runFloor measures the floor (see floorRig): one message at a time, each
// sent once the previous one reached every receiver (and, with cfg.Rate, no
// sooner than 1/Rate after the previous one started), for cfg.Duration
// after cfg.Warmup. Its latency is what relay's latency at the same rate
// compares with.
func runFloor(ctx context.Context, cfg Config) (*Result, error) {
	f, err := newFloorRig(cfg.Receivers, cfg.Size)
	if err != nil {
		return nil, fmt.Errorf("loadgen: floor: %w", err)
	}
	defer f.close()
	res := &Result{Mode: ModeFloor, Senders: 1, Receivers: cfg.Receivers, Channels: 1, Size: cfg.Size}
	var every time.Duration // with --rate: a message starts at most this often
	if cfg.Rate > 0 {
		every = time.Duration(float64(time.Second) / cfg.Rate)
		res.TargetRate = cfg.Rate
	}
	loop := func(d time.Duration) (msgs uint64, err error) {
		end := time.Now().Add(d)
		next := time.Now()
		for time.Now().Before(end) {
			if every > 0 {
				if !sleepCtx(ctx, time.Until(next)) {
					return msgs, ctx.Err()
				}
				next = next.Add(every)
			}
			if err := f.send(ctx); err != nil {
				return msgs, err
			}
			msgs++
		}
		return msgs, nil
	}
	if _, err := loop(cfg.Warmup); err != nil {
		return nil, fmt.Errorf("loadgen: floor: %w", err)
	}
	var probe SelfProbe
	a, aerr := probe.Stats(false)
	if cfg.OnMeasure != nil && cfg.Duration > 0 {
		go cfg.OnMeasure(cfg.Duration)
	}
	f.recording.Store(true)
	start := time.Now()
	msgs, err := loop(cfg.Duration)
	secs := time.Since(start).Seconds()
	f.recording.Store(false)
	b, berr := probe.Stats(false)
	if err != nil && !errors.Is(err, context.Canceled) {
		return nil, fmt.Errorf("loadgen: floor: %w", err)
	}
	res.Seconds = secs
	res.Sent = msgs
	res.Deliveries = msgs * uint64(cfg.Receivers)
	res.Expected = res.Deliveries
	if secs > 0 {
		res.OfferedPerSec = float64(msgs) / secs
		res.DeliveredMsgsPerSec = res.OfferedPerSec
		res.DeliveriesPerSec = float64(res.Deliveries) / secs
	}
	res.Latency = summarise(f.lat.merged())
	if aerr == nil && berr == nil {
		res.Server = newServerReport(probe, a, b, secs, res.Deliveries, 0)
	}
	return res, nil
}
