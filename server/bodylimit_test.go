package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"testing"
	"testing/iotest"
)

func envelope(size int) []byte {
	prefix := []byte{0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(prefix[1:], uint32(size))
	return append(prefix, bytes.Repeat([]byte{'m'}, size)...)
}

func TestEnvelopeLimiter(t *testing.T) {
	t.Parallel()
	const limit = 10
	for _, tc := range []struct {
		name     string
		body     []byte
		passed   int // bytes read before the refusal, or all of them
		refusing bool
	}{
		{"ok/one message at the limit", envelope(limit), 5 + limit, false},
		{"ok/several messages and an empty one", bytes.Join([][]byte{envelope(3), envelope(0), envelope(limit)}, nil),
			5 + 3 + 5 + 5 + limit, false},
		{"refused/one message over the limit", envelope(limit + 1), 5, true},
		{"refused/the third message over the limit", bytes.Join([][]byte{envelope(3), envelope(4), envelope(1 << 20)}, nil),
			5 + 3 + 5 + 4 + 5, true},
		{"refused/a prefix announcing 4 GiB", []byte{0, 0xff, 0xff, 0xff, 0xff, 'x'}, 5, true},
	} {
		for name, reader := range map[string]func(io.Reader) io.Reader{
			"whole":       func(r io.Reader) io.Reader { return r },
			"byte a time": iotest.OneByteReader,
		} {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				l := &envelopeLimiter{body: io.NopCloser(reader(bytes.NewReader(tc.body))), limit: limit}
				got, err := io.ReadAll(l)
				var tooLarge *http.MaxBytesError
				if refused := errors.As(err, &tooLarge); refused != tc.refusing || (!tc.refusing && err != nil) {
					t.Fatalf("error %v, want refusal %v", err, tc.refusing)
				}
				if !bytes.Equal(got, tc.body[:tc.passed]) {
					t.Errorf("passed %d bytes, want the first %d unchanged", len(got), tc.passed)
				}
			})
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
}
