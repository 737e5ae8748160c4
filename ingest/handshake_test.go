package ingest

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestParseHandshake(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line    string
		channel string
		token   string
		ok      bool
		ack     bool
	}{
		{"default", "default", "", true, false},
		{"sensors.a-1 s3cr3t", "sensors.a-1", "s3cr3t", true, false},
		{"ch eyJhbGciOi.J9_x-y+z/w==", "ch", "eyJhbGciOi.J9_x-y+z/w==", true, false},
		{"ch\r", "ch", "", true, false},
		{"bad channel!", "", "", false, false},
		{"", "", "", false, false},
		{"   ", "", "", false, false},
		{"a b c", "", "", false, false},
		{"a +ack", "a", "", true, true},
		{"a tok +ack", "a", "tok", true, true},
		{"a +ack +ack", "", "", false, false},
		{"a +tok", "", "", false, false},
		{"a ", "", "", false, false},
		{"a..b", "", "", false, false},
		{"a.*", "", "", false, false},
		{strings.Repeat("c", 2048), "", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			t.Parallel()
			h, err := parseHandshake([]byte(tt.line))
			if (err == nil) != tt.ok {
				t.Fatalf("parseHandshake(%q) err = %v, want ok=%v", tt.line, err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrBadHandshake) {
					t.Fatalf("error %v does not wrap ErrBadHandshake", err)
				}
				return
			}
			if h.Channel != tt.channel || h.Token != tt.token || h.Ack != tt.ack {
				t.Fatalf("got %+v, want channel %q token %q ack %v", h, tt.channel, tt.token, tt.ack)
			}
		})
	}
}

func TestReadHandshakeKeepsPipelinedData(t *testing.T) {
	t.Parallel()
	br := bufio.NewReaderSize(strings.NewReader("chan tok\nfirst\nsecond"), 4096)
	h, err := readHandshake(br)
	if err != nil || h.Channel != "chan" || h.Token != "tok" {
		t.Fatalf("readHandshake = %+v, %v", h, err)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "first\nsecond" {
		t.Fatalf("pipelined data = %q", rest)
	}
}

func TestReadHandshakeTooLongWithoutNewline(t *testing.T) {
	t.Parallel()
	// 2 KiB and no newline: refused as soon as the bytes arrive, not at the timeout.
	r := io.MultiReader(strings.NewReader(strings.Repeat("a", 2048)), blockingReader{})
	_, err := readHandshake(bufio.NewReaderSize(r, 4096))
	if !errors.Is(err, ErrBadHandshake) {
		t.Fatalf("err = %v, want ErrBadHandshake", err)
	}
}

// blockingReader fails the test if read: the handshake must not wait for it.
type blockingReader struct{}

func (blockingReader) Read([]byte) (int, error) {
	return 0, errors.New("read past the refused handshake")
}

func FuzzHandshake(f *testing.F) {
	addSplitSeeds(f, "default\nx", "a.b tok\r\ndata", "bad channel!\n", "\n", strings.Repeat("a", 1030)+"\n")
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		whole, errWhole := readHandshake(bufio.NewReaderSize(strings.NewReader(string(data)), 4096))
		brCut := bufio.NewReaderSize(&splitReader{data: data, split: int(split)}, 4096)
		cut, errCut := readHandshake(brCut)
		if whole != cut || (errWhole == nil) != (errCut == nil) {
			t.Fatalf("split at %d: %+v/%v vs %+v/%v", split, whole, errWhole, cut, errCut)
		}
		if errWhole == nil {
			if len(whole.Channel) == 0 || strings.ContainsAny(whole.Channel+whole.Token, " \n\r*>") {
				t.Fatalf("accepted %+v", whole)
			}
			// Everything after the first newline is still there.
			i := strings.IndexByte(string(data), '\n')
			rest, _ := io.ReadAll(brCut)
			if string(rest) != string(data[i+1:]) {
				t.Fatalf("pipelined bytes lost: %q vs %q", rest, data[i+1:])
			}
		}
	})
}
