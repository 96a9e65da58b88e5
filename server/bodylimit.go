package server

import (
	"encoding/binary"
	"io"
	"net/http"
	"strings"
)

// limitBodies stops reading a request at the first message over the limit.
//
// connect-go refuses such a message with resource_exhausted, but only once
// it has read all of it, to keep an HTTP/1.1 connection usable: a client
// announcing a 1 GiB gRPC message holds the call until it has sent 1 GiB,
// and a unary body is read to its end however long it is. Here an
// enveloped body (gRPC, gRPC-Web, Connect streams) fails its read at the
// prefix that announces too much, and a bare body (unary Connect, the plain
// route) past one message's worth; connect-go turns the
// *http.MaxBytesError into resource_exhausted at once, on every protocol.
func limitBodies(next http.Handler, maxMessageBytes int) http.Handler {
	limit := int64(maxMessageBytes)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			if enveloped(r.Header.Get("Content-Type")) {
				r.Body = &envelopeLimiter{body: r.Body, limit: limit}
			} else {
				// One byte over, so that connect-go still sees, and names, a
				// message over the limit.
				r.Body = http.MaxBytesReader(w, r.Body, limit+1)
			}
		}
		next.ServeHTTP(w, r)
	})
}

// enveloped reports whether a content type frames each message with a
// 5-byte prefix, a flags byte and a big-endian length: gRPC, gRPC-Web and
// Connect streams, with or without a codec suffix, in any case, as
// connect-go reads them.
func enveloped(contentType string) bool {
	base, _, _ := strings.Cut(strings.ToLower(contentType), ";")
	base = strings.TrimSpace(base)
	if strings.HasPrefix(base, "application/connect+") {
		return true
	}
	family, _, _ := strings.Cut(base, "+")
	return family == "application/grpc" || family == "application/grpc-web"
}

// envelopeLimiter passes an enveloped body through unchanged, reading each
// message's prefix as it goes by. Once a prefix announces more than limit
// bytes, every later read fails with an *http.MaxBytesError, so the
// message is never read. The limit applies to the length as sent, which
// for a compressed message is its compressed length, as in connect-go.
type envelopeLimiter struct {
	body   io.ReadCloser
	limit  int64
	prefix [5]byte
	have   int   // bytes of the current prefix seen so far
	left   int64 // bytes of the current message still to pass
	err    error // set once a prefix announces too much
}

func (l *envelopeLimiter) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	n, err := l.body.Read(p)
	for data := p[:n]; len(data) > 0; {
		if l.left > 0 {
			skip := min(int64(len(data)), l.left)
			l.left -= skip
			data = data[skip:]
			continue
		}
		copied := copy(l.prefix[l.have:], data)
		l.have += copied
		data = data[copied:]
		if l.have < len(l.prefix) {
			continue
		}
		l.have = 0
		l.left = int64(binary.BigEndian.Uint32(l.prefix[1:]))
		if l.left > l.limit {
			// What was read so far is returned; the message itself is not.
			l.err = &http.MaxBytesError{Limit: l.limit}
			return n - len(data), nil
		}
	}
	return n, err
}

func (l *envelopeLimiter) Close() error { return l.body.Close() }
