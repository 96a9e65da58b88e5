package server

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
)

// Bounds on what the server reads of a request it has already refused for
// its size; see [limitBodies].
const (
	// drainMinBytes is the least a refused body may still be read for.
	drainMinBytes = 16 << 20
	// drainTimeout bounds how long the server reads a refused body.
	drainTimeout = 5 * time.Second
)

// limitBodies stops reading a request at the first message over the limit,
// and makes sure the client can read the refusal.
//
// connect-go refuses such a message with resource_exhausted, but only once
// it has read all of it, to keep an HTTP/1.1 connection usable: a client
// announcing a 1 GiB gRPC message holds the call until it has sent 1 GiB,
// and a unary body is read to its end however long it is. Here an
// enveloped body (gRPC, gRPC-Web, Connect streams) fails its read at the
// prefix that announces too much, and a bare body (unary Connect, the plain
// route) at once when its Content-Length is over the limit, or else past
// one message's worth. The read fails with a *connect.Error, which
// connect-go passes on as it is: resource_exhausted, with a message that
// names the limit, on every protocol.
//
// The refusal is written while the client may still be sending. Over
// HTTP/2, x/net then resets the stream (RST_STREAM NO_ERROR, which RFC 9113
// section 8.1 allows after a complete response), and some clients report
// the reset rather than the answer before it: curl 7.88 prints "(92) Stream
// error in the HTTP/2 framing layer". Over HTTP/1.1, net/http closes the
// connection, and a client still writing may meet a TCP reset before it has
// read the answer. So when the body's declared length shows that the rest
// is worth waiting for, the rest is read and dropped; see [finishRefusal].
func limitBodies(next http.Handler, maxMessageBytes int) http.Handler {
	limit := int64(maxMessageBytes)
	tooLarge := connect.NewError(connect.CodeResourceExhausted, &messageTooLargeError{limit: limit})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		body := r.Body
		var limited limitedBody
		if enveloped(r.Header.Get("Content-Type")) {
			limited = &envelopeLimiter{body: body, limit: limit, tooLarge: tooLarge}
		} else {
			limited = &bareLimiter{body: body, limit: limit, declared: r.ContentLength, tooLarge: tooLarge}
		}
		r.Body = limited
		next.ServeHTTP(w, r)
		// net/http reads the body's type when it writes the headers, to
		// decide whether the connection can be kept: give it its own back.
		r.Body = body
		if state := limited.state(); state.refused {
			finishRefusal(w, r, body, state, limit)
		}
	})
}

// messageTooLargeError is what reading a body past the limit returns. Its
// text reaches the client.
type messageTooLargeError struct{ limit int64 }

func (e *messageTooLargeError) Error() string {
	return fmt.Sprintf("request message over this server's limit of %s (echoloop serve --max-message-bytes)",
		byteSize(e.limit))
}

// Unwrap says what kind of error it is to code that knows net/http's.
func (e *messageTooLargeError) Unwrap() error { return &http.MaxBytesError{Limit: e.limit} }

// byteSize writes a size the way the limits are usually given.
func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// limitedBody is a request body that refuses what goes over the limit.
type limitedBody interface {
	io.ReadCloser
	state() limitState
}

// limitState is what a limited body has seen.
type limitState struct {
	refused bool  // the body went over the limit
	read    int64 // bytes read from the client's body
}

// finishRefusal runs after the handler has answered a request whose body
// went over the limit. It reads and drops the rest of the body, so that
// the stream or connection ends the way the client expects, after it has
// sent everything, rather than with a reset while it is still writing. It reads at most four times the limit (and
// drainMinBytes at least), for at most drainTimeout; a body declared
// longer than that, or of unknown length, is not read further, and the
// client sees the reset.
func finishRefusal(w http.ResponseWriter, r *http.Request, body io.Reader, state limitState, limit int64) {
	// An HTTP/1.1 client that asked to be told before sending its body
	// (Expect: 100-continue, which curl sends for a body over 1 MiB) and
	// was answered before anything was read sends no body at all.
	if r.ProtoMajor == 1 && state.read == 0 && strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		return
	}
	left := r.ContentLength - state.read
	if r.ContentLength < 0 || left > max(4*limit, drainMinBytes) {
		return
	}

	rc := http.NewResponseController(w)
	// Over HTTP/1.1 the answer goes first: curl, for one, stops sending
	// when it reads an error answer. Over HTTP/2 it goes once the rest is
	// in: Go's client stops sending at an error answer but leaves its side
	// of the stream open, waiting for an end that would come only after the
	// drain. A gRPC error is never sent early: it travels in trailers,
	// which come only at the end, and headers sent alone would read as an
	// answer without a status.
	if r.ProtoMajor == 1 && !grpcFamily(w.Header().Get("Content-Type")) {
		_ = rc.Flush()
	}
	_ = rc.SetReadDeadline(time.Now().Add(drainTimeout))
	_, _ = io.CopyN(io.Discard, body, left)
	_ = rc.SetReadDeadline(time.Time{})
}

// enveloped reports whether a content type frames each message with a
// 5-byte prefix, a flags byte and a big-endian length: gRPC, gRPC-Web and
// Connect streams, with or without a codec suffix, in any case, as
// connect-go reads them.
func enveloped(contentType string) bool {
	base := mediaType(contentType)
	if strings.HasPrefix(base, "application/connect+") {
		return true
	}
	family, _, _ := strings.Cut(base, "+")
	return family == "application/grpc" || family == "application/grpc-web"
}

// grpcFamily reports whether a content type is gRPC's own, not gRPC-Web's.
func grpcFamily(contentType string) bool {
	family, _, _ := strings.Cut(mediaType(contentType), "+")
	return family == "application/grpc"
}

func mediaType(contentType string) string {
	base, _, _ := strings.Cut(strings.ToLower(contentType), ";")
	return strings.TrimSpace(base)
}

// bareLimiter passes a body that is one message, unframed, up to limit
// bytes. A body whose declared length is over the limit fails its first
// read without anything being read; any other fails the read that would
// pass the limit, and every read after it.
type bareLimiter struct {
	body     io.ReadCloser
	limit    int64
	declared int64 // Content-Length, -1 when unknown
	tooLarge error
	read     int64
	refused  bool
}

func (l *bareLimiter) Read(p []byte) (int, error) {
	if l.refused || l.declared > l.limit {
		l.refused = true
		return 0, l.tooLarge
	}
	// One byte past the limit at most, to learn whether the body goes on.
	if room := l.limit - l.read + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := l.body.Read(p)
	l.read += int64(n)
	if over := l.read - l.limit; over > 0 {
		l.refused = true
		if passed := n - int(over); passed > 0 {
			return passed, nil
		}
		return 0, l.tooLarge
	}
	return n, err
}

// Close leaves a refused body open for [finishRefusal] to read; x/net
// stops granting a closed body's stream flow control, which would leave
// the client unable to finish sending.
func (l *bareLimiter) Close() error {
	if l.refused {
		return nil
	}
	return l.body.Close()
}

func (l *bareLimiter) state() limitState { return limitState{refused: l.refused, read: l.read} }

// envelopeLimiter passes an enveloped body through unchanged, reading each
// message's prefix as it goes by. Once a prefix announces more than limit
// bytes, that read ends before the prefix and every later read fails, so
// the message is never read and connect-go meets the error where it reads
// the prefix. The limit applies to the length as sent, which for a
// compressed message is its compressed length, as in connect-go.
type envelopeLimiter struct {
	body     io.ReadCloser
	limit    int64
	tooLarge error
	prefix   [5]byte
	have     int   // bytes of the current prefix seen so far
	left     int64 // bytes of the current message still to pass
	read     int64
	refused  bool
}

func (l *envelopeLimiter) Read(p []byte) (int, error) {
	if l.refused {
		return 0, l.tooLarge
	}
	n, err := l.body.Read(p)
	l.read += int64(n)
	for data := p[:n]; len(data) > 0; {
		if l.left > 0 {
			skip := min(int64(len(data)), l.left)
			l.left -= skip
			data = data[skip:]
			continue
		}
		start := n - len(data) - l.have // where the prefix began in p, if it did
		copied := copy(l.prefix[l.have:], data)
		l.have += copied
		data = data[copied:]
		if l.have < len(l.prefix) {
			continue
		}
		l.have = 0
		l.left = int64(binary.BigEndian.Uint32(l.prefix[1:]))
		if l.left > l.limit {
			l.refused = true
			if start > 0 {
				return start, nil
			}
			return 0, l.tooLarge
		}
	}
	return n, err
}

// Close leaves a refused body open, as [bareLimiter.Close] does.
func (l *envelopeLimiter) Close() error {
	if l.refused {
		return nil
	}
	return l.body.Close()
}

func (l *envelopeLimiter) state() limitState { return limitState{refused: l.refused, read: l.read} }
