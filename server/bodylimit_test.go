package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"connectrpc.com/connect"
)

func envelope(size int) []byte {
	prefix := []byte{0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(prefix[1:], uint32(size))
	return append(prefix, bytes.Repeat([]byte{'m'}, size)...)
}

// countingBody records how much of it was read.
type countingBody struct {
	io.Reader
	read   int
	closed bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	b.read += n
	return n, err
}

func (b *countingBody) Close() error { b.closed = true; return nil }

// checkRefusal checks that err is the limit's refusal: resource_exhausted,
// naming the limit, and an *http.MaxBytesError to code that looks for one.
func checkRefusal(t *testing.T, err error, refusing bool) {
	t.Helper()
	var tooLarge *http.MaxBytesError
	if refused := errors.As(err, &tooLarge); refused != refusing || (!refusing && err != nil) {
		t.Fatalf("error %v, want refusal %v", err, refusing)
	}
	if refusing && (connect.CodeOf(err) != connect.CodeResourceExhausted ||
		!strings.Contains(err.Error(), "over this server's limit of 10 bytes")) {
		t.Errorf("refusal %q (%v), want resource_exhausted naming the limit", err, connect.CodeOf(err))
	}
}

func TestEnvelopeLimiter(t *testing.T) {
	t.Parallel()
	const limit = 10
	tooLarge := connect.NewError(connect.CodeResourceExhausted, &messageTooLargeError{limit: limit})
	for _, tc := range []struct {
		name     string
		body     []byte
		passed   int // bytes handed on before the refusal, or all of them
		refusing bool
	}{
		{"ok/one message at the limit", envelope(limit), 5 + limit, false},
		{"ok/several messages and an empty one", bytes.Join([][]byte{envelope(3), envelope(0), envelope(limit)}, nil),
			5 + 3 + 5 + 5 + limit, false},
		{"refused/one message over the limit", envelope(limit + 1), 0, true},
		{"refused/the third message over the limit", bytes.Join([][]byte{envelope(3), envelope(4), envelope(1 << 20)}, nil),
			5 + 3 + 5 + 4, true},
		{"refused/a prefix announcing 4 GiB", []byte{0, 0xff, 0xff, 0xff, 0xff, 'x'}, 0, true},
	} {
		for name, reader := range map[string]func(io.Reader) io.Reader{
			"whole":       func(r io.Reader) io.Reader { return r },
			"byte a time": iotest.OneByteReader,
		} {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				body := &countingBody{Reader: reader(bytes.NewReader(tc.body))}
				l := &envelopeLimiter{body: body, limit: limit, tooLarge: tooLarge}
				got, err := io.ReadAll(l)
				checkRefusal(t, err, tc.refusing)
				// Byte a time, the refused prefix's first four bytes have
				// gone by before the fifth shows what it announces.
				passed := tc.passed
				if tc.refusing && name == "byte a time" {
					passed += 4
				}
				if !bytes.Equal(got, tc.body[:passed]) {
					t.Errorf("passed %d bytes, want the first %d unchanged", len(got), passed)
				}
				// A read takes what the body hands over; byte a time, that
				// is nothing past the refused prefix.
				if tc.refusing && name == "byte a time" && body.read > tc.passed+5 {
					t.Errorf("read %d bytes of the body, want none past the refused prefix", body.read)
				}
				if l.state().refused != tc.refusing {
					t.Errorf("state says refused %v, want %v", l.state().refused, tc.refusing)
				}
			})
		}
	}
}

func TestBareLimiter(t *testing.T) {
	t.Parallel()
	const limit = 10
	tooLarge := connect.NewError(connect.CodeResourceExhausted, &messageTooLargeError{limit: limit})
	for _, tc := range []struct {
		name     string
		size     int
		declared int64 // -1 for a body of unknown length
		passed   int
		refusing bool
		read     int // at most, of the body
	}{
		{"ok/at the limit, declared", limit, limit, limit, false, limit},
		{"ok/at the limit, length unknown", limit, -1, limit, false, limit},
		{"refused/declared over the limit, before reading", 1 << 20, 1 << 20, 0, true, 0},
		{"refused/one byte over, length unknown", limit + 1, -1, limit, true, limit + 1},
		{"refused/far over, length unknown", 1 << 20, -1, limit, true, limit + 1},
	} {
		for name, reader := range map[string]func(io.Reader) io.Reader{
			"whole":       func(r io.Reader) io.Reader { return r },
			"byte a time": iotest.OneByteReader,
		} {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				data := bytes.Repeat([]byte{'b'}, tc.size)
				body := &countingBody{Reader: reader(bytes.NewReader(data))}
				l := &bareLimiter{body: body, limit: limit, declared: tc.declared, tooLarge: tooLarge}
				got, err := io.ReadAll(l)
				checkRefusal(t, err, tc.refusing)
				if len(got) != tc.passed {
					t.Errorf("passed %d bytes, want %d", len(got), tc.passed)
				}
				if body.read > tc.read {
					t.Errorf("read %d bytes of the body, want at most %d", body.read, tc.read)
				}

				// A refused body stays open for the rest to be read and
				// dropped; any other closes as usual.
				_ = l.Close()
				if body.closed == tc.refusing {
					t.Errorf("body closed %v after refusal %v", body.closed, tc.refusing)
				}
			})
		}
	}
}

func TestByteSize(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{
		4 << 20: "4 MiB", 64 << 10: "64 KiB", 1 << 30: "1024 MiB", 1000: "1000 bytes", 1536 << 10: "1536 KiB",
	} {
		if got := byteSize(n); got != want {
			t.Errorf("byteSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestEnvelopedContentTypes(t *testing.T) {
	t.Parallel()
	for contentType, want := range map[string]bool{
		"application/grpc":                         true,
		"application/grpc+proto":                   true,
		"application/grpc-web+json; charset=utf-8": true,
		"Application/GRPC-Web":                     true,
		"application/connect+proto":                true,
		"application/proto":                        false,
		"application/json":                         false,
		"application/grpc-web-text":                false, // base64, which neither connect-go nor vanguard serves
		"application/grpcx":                        false,
		"":                                         false,
	} {
		if got := enveloped(contentType); got != want {
			t.Errorf("enveloped(%q) = %v, want %v", contentType, got, want)
		}
	}
	for contentType, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto; x=y": true,
		"application/grpc-web+proto": false, "application/json": false,
	} {
		if got := grpcFamily(contentType); got != want {
			t.Errorf("grpcFamily(%q) = %v, want %v", contentType, got, want)
		}
	}
}
