package fanout

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsPair returns the server side of a real WebSocket (with its batchConn)
// and the coder/websocket client side.
func wsPair(t testing.TB) (*websocket.Conn, *batchConn, *websocket.Conn) {
	t.Helper()
	type accepted struct {
		conn *websocket.Conn
		bc   *batchConn
	}
	acc := make(chan accepted, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := &hijackWriter{ResponseWriter: w, timeout: 10 * time.Second}
		conn, err := websocket.Accept(hw, r, acceptOptions)
		if err != nil {
			t.Error(err)
			return
		}
		acc <- accepted{conn, hw.bc}
	}))
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rc.SetReadLimit(1 << 20)
	a := <-acc
	t.Cleanup(func() { rc.CloseNow(); a.conn.CloseNow() })
	return a.conn, a.bc, rc
}

// TestWriteFramesReadByLibrary: frames encoded by newMessage at every
// length-encoding boundary, in a batch larger than maxBatch, arrive intact
// and in order at a standard client.
func TestWriteFramesReadByLibrary(t *testing.T) {
	t.Parallel()
	_, bc, rc := wsPair(t)
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, maxBatch - 2, 100, 200000, 3}
	var batch []*message
	for i, n := range sizes {
		typ := websocket.MessageText
		if i%2 == 1 {
			typ = websocket.MessageBinary
		}
		batch = append(batch, newMessage(typ, bytes.Repeat([]byte{byte('a' + i)}, n)))
	}
	// A message built without newMessage still gets a correct header.
	batch = append(batch, &message{typ: websocket.MessageBinary, data: []byte("bare")})
	go func() {
		n, err := bc.writeFrames(batch)
		if n != len(batch) || err != nil {
			t.Errorf("writeFrames: %d of %d, %v", n, len(batch), err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, want := range batch {
		typ, got, err := rc.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if typ != want.typ || !bytes.Equal(got, want.data) {
			t.Fatalf("message %d: got %v/%d bytes, want %v/%d", i, typ, len(got), want.typ, len(want.data))
		}
	}
	// 64 KiB batches: far fewer writes than messages.
	if w := bc.networkWrites(); w >= len(batch) {
		t.Errorf("%d network writes for %d messages", w, len(batch))
	}
}

// TestWriteFramesStopAfterLibraryClose: once the library has written its
// close frame, no data frame may follow it.
func TestWriteFramesStopAfterLibraryClose(t *testing.T) {
	t.Parallel()
	conn, bc, rc := wsPair(t)
	go rc.Read(context.Background()) // answers the close handshake
	if err := conn.Close(websocket.StatusGoingAway, "bye"); err != nil {
		t.Fatal(err)
	}
	if _, err := bc.writeFrames([]*message{newMessage(websocket.MessageText, []byte("late"))}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("writeFrames after close frame: %v, want net.ErrClosed", err)
	}
}

// TestScanLibrarySplitHeaders: the close frame is recognised whatever way
// the library's bytes are cut into writes, and a payload byte that looks
// like a close opcode is not.
func TestScanLibrarySplitHeaders(t *testing.T) {
	t.Parallel()
	var stream bytes.Buffer
	// A 300-byte binary frame whose payload is full of 0x88, a ping, then a close.
	stream.Write(newMessage(websocket.MessageBinary, nil).hdr[:1])
	stream.Write([]byte{126, 0x01, 0x2c})
	stream.Write(bytes.Repeat([]byte{0x88}, 300))
	stream.Write([]byte{0x89, 0})
	closeAt := stream.Len()
	stream.Write([]byte{0x88, 2, 0x03, 0xe9})
	all := stream.Bytes()
	for cut := 1; cut < len(all); cut++ {
		var b batchConn
		b.scanLibrary(all[:cut])
		if b.closeSent != (cut > closeAt+1) {
			t.Fatalf("cut at %d: closeSent = %v", cut, b.closeSent)
		}
		b.scanLibrary(all[cut:])
		if !b.closeSent || b.libRest != 0 || b.libHdrLen != 0 {
			t.Fatalf("cut at %d: state %+v", cut, b.closeSent)
		}
	}
}

// TestNewMessageHeader checks the length encodings against RFC 6455.
func TestNewMessageHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		m := newMessage(websocket.MessageText, make([]byte, tc.n))
		if got := m.hdr[:m.hdrLen]; !bytes.Equal(got, tc.want) {
			t.Errorf("len %d: header % x, want % x", tc.n, got, tc.want)
		}
	}
}
