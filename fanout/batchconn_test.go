package fanout

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err = net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// readN reads n bytes from c.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBatchConnCorkedWritesShareOneSyscall(t *testing.T) {
	t.Parallel()
	s, c := tcpPair(t)
	bc := newBatchConn(s, 10*time.Second)
	var want []byte
	bc.cork()
	for i := range 10 {
		p := bytes.Repeat([]byte{byte('a' + i)}, 100)
		want = append(want, p...)
		if n, err := bc.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	if got := bc.networkWrites(); got != 0 {
		t.Fatalf("%d network writes while corked", got)
	}
	if err := bc.uncork(); err != nil {
		t.Fatal(err)
	}
	if got := bc.networkWrites(); got != 1 {
		t.Errorf("%d network writes for one batch, want 1", got)
	}
	if got := readN(t, c, len(want)); !bytes.Equal(got, want) {
		t.Error("bytes differ")
	}
}

func TestBatchConnOverflowKeepsOrder(t *testing.T) {
	t.Parallel()
	s, c := tcpPair(t)
	bc := newBatchConn(s, 10*time.Second)
	var want []byte
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 40*10<<10)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.ReadFull(c, b)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	bc.cork()
	for i := range 40 {
		p := bytes.Repeat([]byte{byte(i)}, 10<<10)
		want = append(want, p...)
		if _, err := bc.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := bc.uncork(); err != nil {
		t.Fatal(err)
	}
	if n := bc.networkWrites(); n > 8 {
		t.Errorf("%d network writes for 400 KiB, want about 400/64", n)
	}
	if !bytes.Equal(<-got, want) {
		t.Error("bytes differ or out of order")
	}
}

func TestBatchConnUncorkedWritesGoStraightOut(t *testing.T) {
	t.Parallel()
	s, c := tcpPair(t)
	bc := newBatchConn(s, 10*time.Second)
	for range 3 {
		if _, err := bc.Write([]byte("abc")); err != nil {
			t.Fatal(err)
		}
	}
	if got := bc.networkWrites(); got != 3 {
		t.Errorf("%d network writes, want 3", got)
	}
	if got := readN(t, c, 9); string(got) != "abcabcabc" {
		t.Errorf("got %q", got)
	}
}

func TestBatchConnCloseSendsHeldBytes(t *testing.T) {
	t.Parallel()
	s, c := tcpPair(t)
	bc := newBatchConn(s, 10*time.Second)
	bc.cork()
	bc.Write([]byte("close frame"))
	bc.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "close frame" {
		t.Errorf("peer got %q, %v", got, err)
	}
	if err := bc.uncork(); err == nil {
		t.Error("uncork after Close succeeded")
	}
}

func TestBatchConnWriteDeadline(t *testing.T) {
	t.Parallel()
	s, _ := tcpPair(t) // the peer never reads
	bc := newBatchConn(s, 200*time.Millisecond)
	p := make([]byte, 1<<20)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = bc.Write(p)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if _, err2 := bc.Write([]byte("x")); err2 == nil {
		t.Error("a write after a failed one succeeded")
	}
}
