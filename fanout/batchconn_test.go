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

func TestBatchConnLibraryWritesGoStraightOut(t *testing.T) {
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

// A cut sends the close frame when none has gone out, then closes; after
// the library's own close frame it sends nothing more.
func TestBatchConnCutSendsCloseFrame(t *testing.T) {
	t.Parallel()
	s, c := tcpPair(t)
	bc := newBatchConn(s, 10*time.Second)
	if !bc.cut(1001, "bye", 0) {
		t.Error("cut reported no close frame sent")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if code, reason, ok := lastCloseFrame(got); !ok || code != 1001 || reason != "bye" {
		t.Errorf("peer got %q, want a 1001 close frame", got)
	}

	s, c = tcpPair(t)
	bc = newBatchConn(s, 10*time.Second)
	lib := []byte{0x88, 0x02, 0x03, 0xe8} // the library's close frame, 1000
	if _, err := bc.Write(lib); err != nil {
		t.Fatal(err)
	}
	if bc.cut(1001, "bye", 0) {
		t.Error("cut sent a second close frame")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(c); err != nil || !bytes.Equal(got, lib) {
		t.Errorf("peer got %q, %v; want only the library's frame", got, err)
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
