package wsframe

import "testing"

func TestHeaderRoundTrip(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for _, n := range []int{0, 1, 125, 126, 0xffff, 0x10000, 1 << 30} {
		for _, mask := range []*[4]byte{nil, &key} {
			b := AppendHeader(nil, OpBinary, n, mask)
			h, hl, ok := ParseHeader(b)
			if !ok || hl != len(b) || !h.Fin || h.Op != OpBinary || h.Len != uint64(n) || h.Masked != (mask != nil) {
				t.Errorf("n=%d masked=%v: %+v, %d, %v (header %x)", n, mask != nil, h, hl, ok, b)
			}
			if mask != nil && h.Mask != key {
				t.Errorf("mask %v, want %v", h.Mask, key)
			}
			if _, _, ok := ParseHeader(b[:len(b)-1]); ok {
				t.Errorf("n=%d: a cut header parsed", n)
			}
		}
	}
}

func TestCloseFrame(t *testing.T) {
	b, err := AppendClose(nil, 1001, "server shutting down", nil)
	if err != nil {
		t.Fatal(err)
	}
	h, hl, ok := ParseHeader(b)
	if !ok || h.Op != OpClose || int(h.Len) != len(b)-hl || CloseCode(b[hl:]) != 1001 || string(b[hl+2:]) != "server shutting down" {
		t.Errorf("close frame %x", b)
	}
	if _, err := AppendClose(nil, 1000, string(make([]byte, 124)), nil); err == nil {
		t.Error("a 124-byte reason was taken")
	}
	key := [4]byte{9, 8, 7, 6}
	m, _ := AppendControl(nil, OpPong, []byte("hi"), &key)
	h, hl, _ = ParseHeader(m)
	p := append([]byte(nil), m[hl:]...)
	Mask(p, h.Mask)
	if !h.Masked || string(p) != "hi" {
		t.Errorf("masked pong %x", m)
	}
	if CloseCode(nil) != 1005 {
		t.Error("empty close payload is not 1005")
	}
}

// FuzzParseHeader: any bytes parse without panicking, and a header parsed
// from any prefix is the one parsed from the whole.
func FuzzParseHeader(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	for _, n := range []int{0, 125, 126, 70000} {
		f.Add(AppendHeader(nil, OpText, n, nil))
		f.Add(AppendHeader(nil, OpPing, n, &key))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, ok := ParseHeader(b)
		for i := range len(b) {
			h2, n2, ok2 := ParseHeader(b[:i])
			if ok2 && (!ok || h2 != h || n2 != n) {
				t.Fatalf("prefix %d parsed as %+v/%d, whole as %+v/%d/%v", i, h2, n2, h, n, ok)
			}
		}
		if ok && (n > MaxHeaderLen || n != HeaderLen(b[0], b[1])) {
			t.Fatalf("header length %d", n)
		}
	})
}
