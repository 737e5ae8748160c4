package loadgen

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
)

// BenchmarkLoopbackFloor measures the machine's floor for fan-out latency:
// one op is one 100-byte message written to R plain loopback TCP
// connections, by GOMAXPROCS goroutines that each own a share of them (so
// every core writes), until the last of R reading goroutines has it. No
// relay, no NATS, no WebSocket framing and nothing else running: ns/op is
// the least time a message can take to reach all R receivers on this
// machine, and so bounds the latency of the last (and, at R = 1,000, of the
// 99th percentile) delivery. docs/benchmarks.md compares relay with it.
func BenchmarkLoopbackFloor(b *testing.B) {
	for _, r := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("receivers=%d", r), func(b *testing.B) { loopbackFloor(b, r) })
	}
}

func loopbackFloor(b *testing.B, receivers int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	const size = 100 + 2 // a 100-byte payload with a WebSocket frame header
	var got sync.WaitGroup
	servers := make([]net.Conn, 0, receivers)
	var readers sync.WaitGroup
	defer readers.Wait()
	for range receivers {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			c.Close()
			b.Fatal(err)
		}
		defer c.Close()
		defer s.Close()
		servers = append(servers, s)
		readers.Add(1)
		go func() {
			defer readers.Done()
			buf := make([]byte, 4096)
			have := 0
			for {
				n, err := c.Read(buf)
				have += n
				for ; have >= size; have -= size {
					got.Done()
				}
				if err != nil {
					return // closed at the end
				}
			}
		}()
	}
	msg := make([]byte, size)
	shards := runtime.GOMAXPROCS(0)
	per := (receivers + shards - 1) / shards
	start := make([]chan struct{}, shards)
	var wrote sync.WaitGroup
	for i := range shards {
		start[i] = make(chan struct{})
		share := servers[min(i*per, receivers):min((i+1)*per, receivers)]
		go func() {
			for range start[i] {
				for _, s := range share {
					if _, err := s.Write(msg); err != nil {
						b.Error(err)
					}
				}
				wrote.Done()
			}
		}()
	}
	defer func() {
		for _, c := range start {
			close(c)
		}
	}()
	b.ResetTimer()
	for b.Loop() {
		got.Add(receivers)
		wrote.Add(shards)
		for _, c := range start {
			c <- struct{}{}
		}
		got.Wait()
		wrote.Wait()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(receivers)/1e3, "µs/delivery")
}
