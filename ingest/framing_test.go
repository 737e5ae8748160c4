package ingest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/relaydev/relay/shared/config"
)

type framed struct {
	msgs  []string
	texts []bool
	err   error // the error that ended framing (nil for clean EOF)
}

// frameAll frames r to the end with a small bufio buffer, so long lines take
// the accumulation path.
func frameAll(t testing.TB, f config.Framing, r io.Reader, maxMsg int) framed {
	fr, err := newFramer(f, bufio.NewReaderSize(r, 16), maxMsg)
	if err != nil {
		t.Fatal(err)
	}
	var out framed
	for range 100000 {
		msg, text, err := fr.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				out.err = err
			}
			return out
		}
		out.msgs = append(out.msgs, string(msg))
		out.texts = append(out.texts, text)
	}
	t.Fatal("framer did not end")
	return out
}

func TestLineFraming(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 40)
	tests := []struct {
		name  string
		in    string
		want  []string
		texts []bool
		err   error
	}{
		{"one line", "hello\n", []string{"hello"}, []bool{true}, nil},
		{"crlf stripped", "a\r\nb\r\n", []string{"a", "b"}, []bool{true, true}, nil},
		{"empty lines are messages", "\n\nx\n", []string{"", "", "x"}, []bool{true, true, true}, nil},
		{"last line without newline", "a\nb", []string{"a", "b"}, []bool{true, true}, nil},
		{"only cr kept inside", "a\rb\n", []string{"a\rb"}, []bool{true}, nil},
		{"invalid utf8 is binary", "\xff\xfe\n", []string{"\xff\xfe"}, []bool{false}, nil},
		{"nothing", "", nil, nil, nil},
		{"long line within max", long + "\n", []string{long}, []bool{true}, nil},
		{"exactly max plus cr", strings.Repeat("y", 64) + "\r\n", []string{strings.Repeat("y", 64)}, []bool{true}, nil},
		{"over max", strings.Repeat("z", 65) + "\n", nil, nil, ErrTooLarge},
		{"over max without newline", strings.Repeat("z", 100), nil, nil, ErrTooLarge},
		{"over max after good lines", "ok\n" + strings.Repeat("z", 200) + "\nlater\n", []string{"ok"}, []bool{true}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := frameAll(t, config.FramingLine, strings.NewReader(tt.in), 64)
			if !errors.Is(got.err, tt.err) || (tt.err == nil && got.err != nil) {
				t.Fatalf("err = %v, want %v", got.err, tt.err)
			}
			if strings.Join(got.msgs, "|") != strings.Join(tt.want, "|") || len(got.msgs) != len(tt.want) {
				t.Fatalf("msgs = %q, want %q", got.msgs, tt.want)
			}
			for i := range tt.texts {
				if got.texts[i] != tt.texts[i] {
					t.Fatalf("text[%d] = %v, want %v", i, got.texts[i], tt.texts[i])
				}
			}
		})
	}
}

func len32(payloads ...string) string {
	var b bytes.Buffer
	for _, p := range payloads {
		binary.Write(&b, binary.BigEndian, uint32(len(p)))
		b.WriteString(p)
	}
	return b.String()
}

func TestLen32Framing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want []string
		err  error
	}{
		{"two frames", len32("hello", "world"), []string{"hello", "world"}, nil},
		{"empty frame", len32("", "x"), []string{"", "x"}, nil},
		{"binary payload", len32("\x00\n\xff"), []string{"\x00\n\xff"}, nil},
		{"exactly max", len32(strings.Repeat("a", 64)), []string{strings.Repeat("a", 64)}, nil},
		{"over max", len32(strings.Repeat("a", 65)), nil, ErrTooLarge},
		{"huge length never allocated", "\xff\xff\xff\xff", nil, ErrTooLarge},
		{"truncated header", "\x00\x00", nil, ErrTruncated},
		{"truncated payload", "\x00\x00\x00\x05abc", nil, ErrTruncated},
		{"nothing", "", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := frameAll(t, config.FramingLen32, strings.NewReader(tt.in), 64)
			if !errors.Is(got.err, tt.err) || (tt.err == nil && got.err != nil) {
				t.Fatalf("err = %v, want %v", got.err, tt.err)
			}
			if strings.Join(got.msgs, "|") != strings.Join(tt.want, "|") || len(got.msgs) != len(tt.want) {
				t.Fatalf("msgs = %q, want %q", got.msgs, tt.want)
			}
			for _, text := range got.texts {
				if text {
					t.Fatal("len32 messages must be binary")
				}
			}
		})
	}
}

func TestRawFraming(t *testing.T) {
	t.Parallel()
	in := strings.Repeat("0123456789", 20) // 200 bytes
	got := frameAll(t, config.FramingRaw, iotest.OneByteReader(strings.NewReader(in)), 64)
	if got.err != nil {
		t.Fatal(got.err)
	}
	if strings.Join(got.msgs, "") != in {
		t.Fatalf("raw framing lost or reordered bytes")
	}
	got = frameAll(t, config.FramingRaw, strings.NewReader(in), 64)
	for _, m := range got.msgs {
		if len(m) > 64 {
			t.Fatalf("raw message of %d bytes exceeds max 64", len(m))
		}
	}
	if strings.Join(got.msgs, "") != in || len(got.msgs) < 4 {
		t.Fatalf("raw framing of 200 bytes at max 64 gave %d messages", len(got.msgs))
	}
}

// splitReader returns data in two reads split at a point, then one byte at
// a time: the framers must not care where TCP cuts the stream.
type splitReader struct {
	data  []byte
	split int
	n     int
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := len(r.data)
	if r.n == 0 && r.split < k {
		k = r.split
	} else if r.n > 1 {
		k = 1
	}
	r.n++
	k = min(k, len(p))
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

// addSplitSeeds adds every input at every split point.
func addSplitSeeds(f *testing.F, inputs ...string) {
	for _, in := range inputs {
		for i := 0; i <= len(in); i++ {
			f.Add([]byte(in), uint16(i))
		}
	}
}

func fuzzFraming(f *testing.F, framing config.Framing, inputs ...string) {
	addSplitSeeds(f, inputs...)
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		const maxMsg = 32
		whole := frameAll(t, framing, bytes.NewReader(data), maxMsg)
		cut := frameAll(t, framing, &splitReader{data: data, split: int(split)}, maxMsg)
		if framing == config.FramingRaw {
			// Raw messages are whatever each read returned: only the
			// bytes and their order must survive.
			if strings.Join(whole.msgs, "") != strings.Join(cut.msgs, "") {
				t.Fatalf("raw bytes differ with split at %d", split)
			}
			return
		}
		if strings.Join(whole.msgs, "\x00|") != strings.Join(cut.msgs, "\x00|") || len(whole.msgs) != len(cut.msgs) {
			t.Fatalf("split at %d changed messages:\n whole %q\n cut   %q", split, whole.msgs, cut.msgs)
		}
		if (whole.err == nil) != (cut.err == nil) {
			t.Fatalf("split at %d changed the outcome: %v vs %v", split, whole.err, cut.err)
		}
		for _, m := range whole.msgs {
			if len(m) > maxMsg {
				t.Fatalf("message of %d bytes over max %d", len(m), maxMsg)
			}
			if framing == config.FramingLine && strings.Contains(m, "\n") {
				t.Fatalf("line message contains a newline: %q", m)
			}
		}
	})
}

func FuzzLineFraming(f *testing.F) {
	fuzzFraming(f, config.FramingLine, "a\nbc\r\n\n", "x\xff\ny", strings.Repeat("q", 40)+"\nok\n", "last")
}

func FuzzLen32Framing(f *testing.F) {
	fuzzFraming(f, config.FramingLen32, len32("hi", "", "there"), "\x00\x00\x00\x40"+strings.Repeat("b", 64), "\x00\x00\x00\x03ab")
}

func FuzzRawFraming(f *testing.F) {
	fuzzFraming(f, config.FramingRaw, strings.Repeat("r", 70), "a\nb")
}
