package server

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// jsonExpansion bounds how much longer an Echo message is in protojson
// than in protobuf: a control character in a string is written as a
// six-byte \u00XX escape, and every other byte in fewer. jsonOverhead
// bounds the field names, quotes and empty fields JSON adds on top.
const (
	jsonExpansion = 6
	jsonOverhead  = 4 << 10
)

// limitAnswers refuses an answer over the message limit with a message a
// client can act on, the same on every protocol.
//
// connect-go refuses such an answer itself, but in words of its own
// configuration ("exceeds sendMaxBytes"), and for a unary call where no
// interceptor sees it. An echo is the request's message and the caller's
// identity, so a request just under the limit can make an answer just over
// it. connect-go's check stays behind this one: the answer is measured
// before compression, which rarely makes a message longer.
func limitAnswers(limit int) connect.Interceptor { return answerLimit{limit: limit} }

type answerLimit struct{ limit int }

func (a answerLimit) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if err != nil || res == nil {
			return res, err
		}
		if err := a.check(req.Header().Get("Content-Type"), res.Any()); err != nil {
			return nil, err
		}
		return res, nil
	}
}

func (answerLimit) WrapStreamingClient(
	next connect.StreamingClientFunc,
) connect.StreamingClientFunc {
	return next
}

func (a answerLimit) WrapStreamingHandler(
	next connect.StreamingHandlerFunc,
) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, &limitedSender{StreamingHandlerConn: conn, limit: a})
	}
}

// limitedSender checks each answer of a stream before it is sent.
type limitedSender struct {
	connect.StreamingHandlerConn
	limit answerLimit
}

func (s *limitedSender) Send(msg any) error {
	if err := s.limit.check(s.RequestHeader().Get("Content-Type"), msg); err != nil {
		return err
	}
	return s.StreamingHandlerConn.Send(msg)
}

// check measures an answer in the codec the call uses. The protobuf size
// costs a walk of the message; JSON is encoded to be measured only when
// its bound comes near the limit, so an ordinary call is not encoded twice.
func (a answerLimit) check(contentType string, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
	size := proto.Size(m)
	if jsonCodec(contentType) && jsonExpansion*size+jsonOverhead > a.limit {
		// An answer that does not encode is left for connect-go to report,
		// as it would any other.
		if data, err := (strictJSON{}).Marshal(m); err == nil {
			size = len(data)
		}
	}
	if size <= a.limit {
		return nil
	}
	return connect.NewError(connect.CodeResourceExhausted,
		&answerTooLargeError{size: int64(size), limit: int64(a.limit)})
}

// jsonCodec reports whether a content type asks for JSON, on any of the
// protocols: application/json, or a +json suffix as in
// application/grpc+json.
func jsonCodec(contentType string) bool {
	base := mediaType(contentType)
	return strings.HasSuffix(base, "/json") || strings.HasSuffix(base, "+json")
}

// answerTooLargeError is what an answer over the limit is refused with. Its
// text reaches the client, and reads as [messageTooLargeError] does.
type answerTooLargeError struct{ size, limit int64 }

func (e *answerTooLargeError) Error() string {
	return fmt.Sprintf("answer message of %d bytes over this server's limit of %s "+
		"(echoloop serve --max-message-bytes): the echo adds the caller's identity "+
		"to the message, so send a shorter one", e.size, byteSize(e.limit))
}

// limitedGzip is gzip for request messages that stops at the message limit
// with [messageTooLargeError], as a message sent over the limit is refused.
// connect-go passes an error of its own type from a decompressor through
// unchanged; left to itself, it reads a compressed message to its end and
// refuses it in words of its own configuration.
type limitedGzip struct {
	gzip.Reader
	limit int64
	read  int64
}

func newLimitedGzip(limit int) func() connect.Decompressor {
	return func() connect.Decompressor { return &limitedGzip{limit: int64(limit)} }
}

func (d *limitedGzip) Read(p []byte) (int, error) {
	// One byte past the limit at most, to learn whether the message goes on.
	if room := d.limit - d.read + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := d.Reader.Read(p)
	d.read += int64(n)
	if d.read > d.limit {
		return 0, connect.NewError(connect.CodeResourceExhausted, &messageTooLargeError{limit: d.limit})
	}
	return n, err
}

// Reset starts on the next message; connect-go calls it before each.
func (d *limitedGzip) Reset(r io.Reader) error {
	d.read = 0
	return d.Reader.Reset(r)
}

// newGzipWriter is connect-go's own gzip compressor, for answers.
func newGzipWriter() connect.Compressor { return gzip.NewWriter(io.Discard) }
