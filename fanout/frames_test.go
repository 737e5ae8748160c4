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

	"github.com/relaydev/relay/shared/wsframe"
)

// wsPair returns the server side of a real WebSocket, accepted as serveWS
// accepts, and the coder/websocket client side.
func wsPair(t testing.TB) (*wsframe.Conn, *websocket.Conn) {
	t.Helper()
	acc := make(chan *wsframe.Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o := *acceptOptions
		o.WriteTimeout = 10 * time.Second
		conn, err := wsframe.Accept(w, r, &o)
		if err != nil {
			t.Error(err)
			return
		}
		acc <- conn
	}))
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rc.SetReadLimit(1 << 20)
	conn := <-acc
	t.Cleanup(func() { rc.CloseNow(); conn.Close() })
	return conn, rc
}

// TestWriteFramesReadByLibrary: frames encoded by newMessage at every
// length-encoding boundary, in a batch larger than one 64 KiB write, arrive
// intact and in order at a standard client.
func TestWriteFramesReadByLibrary(t *testing.T) {
	t.Parallel()
	conn, rc := wsPair(t)
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 64<<10 - 2, 100, 200000, 3}
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
		n, err := wsframe.WriteFrames(conn, batch)
		if n != len(batch) || err != nil {
			t.Errorf("WriteFrames: %d of %d, %v", n, len(batch), err)
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
}

// TestWriteFramesStopAfterClose: once the close frame has gone out, no data
// frame may follow it.
func TestWriteFramesStopAfterClose(t *testing.T) {
	t.Parallel()
	conn, rc := wsPair(t)
	go rc.Read(context.Background()) // answers the close handshake
	if err := conn.WriteClose(uint16(websocket.StatusGoingAway), "bye"); err != nil {
		t.Fatal(err)
	}
	if _, err := wsframe.WriteFrames(conn, []*message{newMessage(websocket.MessageText, []byte("late"))}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteFrames after close frame: %v, want net.ErrClosed", err)
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
