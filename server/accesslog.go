package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
)

// requestInfo is what the server knows of one HTTP request before any
// protocol handler has seen it.
type requestInfo struct {
	httpVersion string
	protocol    string // one of the Protocol constants
}

type requestInfoKey struct{}

func requestInfoFrom(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	if info == nil {
		return &requestInfo{}
	}
	return info
}

// protocolOf names the protocol of a request from its route, method and
// content type, the way the protocol handlers themselves tell them apart.
// What is none of the RPC protocols — the plain route, /metrics, a GET of
// some other path — is plain HTTP.
func protocolOf(r *http.Request) string {
	if r.URL.Path == PlainHTTPPath || r.URL.Path == metricsPath {
		return ProtocolHTTP
	}
	contentType := r.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(contentType, "application/grpc-web"):
		return ProtocolGRPCWeb
	case strings.HasPrefix(contentType, "application/grpc"):
		return ProtocolGRPC
	case r.Method != http.MethodPost && !r.URL.Query().Has("connect"):
		// Connect calls are POSTs, or GETs that say so in their query.
		return ProtocolHTTP
	}
	return ProtocolConnect
}

// logCalls writes one line per call once it has ended, with the outcome the
// client actually received. It sits in front of every handler, so requests
// that fail before any RPC code runs (a body that does not decode, one over
// the size limit) and answers that fail on the way out are logged with
// their real code too.
func (s *Server) logCalls(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{httpVersion: r.Proto, protocol: protocolOf(r)}
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))
		rec := &responseRecorder{ResponseWriter: w,
			connectStream: strings.HasPrefix(r.Header.Get("Content-Type"), "application/connect+")}

		s.inFlight.Add(1)
		next.ServeHTTP(rec, r)
		s.inFlight.Add(-1)

		procedure := r.URL.Path
		if procedure == PlainHTTPPath {
			procedure = echov1connect.EchoServiceEchoProcedure
		}
		code, elapsed := rec.code(info.protocol), time.Since(start)
		if procedure != metricsPath {
			label := metricsProcedure(procedure)
			s.metrics.calls.WithLabelValues(info.protocol, label, code).Inc()
			s.metrics.callDuration.WithLabelValues(info.protocol, label).Observe(elapsed.Seconds())
		}
		// Health checks from orchestrators arrive every few seconds; at
		// info level they would drown the calls people make.
		level := slog.LevelInfo
		if strings.HasPrefix(procedure, "/"+grpchealth.HealthV1ServiceName+"/") {
			level = slog.LevelDebug
		}
		if !s.log.Enabled(r.Context(), level) {
			return
		}
		// The record is built by hand, with typed attributes and no
		// caller: Logger.Log would look up the caller's program counter
		// and box every value, on every call.
		record := slog.NewRecord(time.Now(), level, "call", 0)
		record.AddAttrs(
			slog.String(KeyProcedure, procedure),
			slog.String(KeyProtocol, info.protocol),
			slog.String(KeyCode, code),
			slog.Duration(KeyDuration, elapsed),
			slog.String(KeyRemote, r.RemoteAddr),
		)
		if conn := connInfoFrom(r.Context()); conn != nil && conn.peer != nil {
			record.AddAttrs(slog.String(KeyPeerCN, conn.peer.GetCommonName()),
				slog.String(KeyPeerSHA256, conn.peer.GetSha256Fingerprint()))
		}
		_ = s.log.Handler().Handle(r.Context(), record)
	})
}

// servedProcedures are the procedures the port serves. Metrics label only
// these by name: a label per path a client made up would grow the series
// without bound.
var servedProcedures = map[string]bool{
	echov1connect.EchoServiceEchoProcedure:                                true,
	echov1connect.EchoServiceEchoStreamProcedure:                          true,
	echov1connect.EchoServiceEchoChatProcedure:                            true,
	"/" + grpchealth.HealthV1ServiceName + "/Check":                       true,
	"/" + grpchealth.HealthV1ServiceName + "/Watch":                       true,
	"/" + grpcreflect.ReflectV1ServiceName + "/ServerReflectionInfo":      true,
	"/" + grpcreflect.ReflectV1AlphaServiceName + "/ServerReflectionInfo": true,
}

// otherProcedure is the metrics label of every path the port does not serve.
const otherProcedure = "other"

func metricsProcedure(procedure string) string {
	if servedProcedures[procedure] {
		return procedure
	}
	return otherProcedure
}

// responseRecorder passes a response through while keeping what the access
// log needs to name its code: the status, the start of an error body and
// the end of any body, where gRPC-Web and Connect streams put their status.
type responseRecorder struct {
	http.ResponseWriter
	status int
	head   []byte // first bytes of a non-200 body
	tail   []byte // last bytes of the body
	// connectStream marks a Connect streaming call, whose outcome is in an
	// end-of-stream message rather than in the HTTP status.
	connectStream bool
}

const (
	recordHead = 1 << 10
	recordTail = 512
)

func (r *responseRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *responseRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.status != http.StatusOK && len(r.head) < recordHead {
		r.head = append(r.head, p[:min(len(p), recordHead-len(r.head))]...)
	}
	if len(p) >= recordTail {
		r.tail = append(r.tail[:0], p[len(p)-recordTail:]...)
	} else {
		r.tail = append(r.tail, p...)
		if extra := len(r.tail) - recordTail; extra > 0 {
			r.tail = append(r.tail[:0], r.tail[extra:]...)
		}
	}
	return r.ResponseWriter.Write(p)
}

// Flush keeps streaming responses streaming.
func (r *responseRecorder) Flush() {
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection's own writer.
func (r *responseRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// code names the outcome of the call as its client saw it: "ok" or a
// Connect code name.
func (r *responseRecorder) code(protocol string) string {
	status := r.status
	if status == 0 {
		status = http.StatusOK
	}
	switch protocol {
	case ProtocolGRPC, ProtocolGRPCWeb:
		if v := r.grpcStatus(); v != "" {
			return grpcCodeName(v)
		}
		// No status at all: the stream was cut, or its trailers were too
		// large to stay below the compression threshold and left the log
		// nothing to read.
		return connect.CodeUnknown.String()
	}
	if status != http.StatusOK {
		return errorBodyCode(r.head, status)
	}
	if r.connectStream {
		return connectEndStreamCode(r.tail)
	}
	return "ok"
}

// connectEndStreamCode reads the code from the end-of-stream message that
// closes a Connect stream: {"error": {"code": "..."}} on failure, no error
// on success.
func connectEndStreamCode(tail []byte) string {
	i := bytes.LastIndex(tail, []byte(`"error":`))
	if i < 0 {
		return "ok"
	}
	rest := tail[i:]
	const key = `"code":"`
	j := bytes.Index(rest, []byte(key))
	if j < 0 {
		return connect.CodeUnknown.String()
	}
	rest = rest[j+len(key):]
	if k := bytes.IndexByte(rest, '"'); k >= 0 {
		return string(rest[:k])
	}
	return connect.CodeUnknown.String()
}

// grpcStatus finds grpc-status in the headers (trailers-only answers), in
// the trailers, or in a gRPC-Web trailer frame at the end of the body.
func (r *responseRecorder) grpcStatus() string {
	header := r.Header()
	for _, key := range []string{"Grpc-Status", http.TrailerPrefix + "Grpc-Status"} {
		if v := header.Get(key); v != "" {
			return v
		}
	}
	// The frame starts with a binary prefix, so the text is searched as
	// written (gRPC-Web trailer names are lower case) rather than folded:
	// bytes.ToLower would turn the prefix into longer runes and shift every
	// index after it.
	for _, name := range []string{"grpc-status:", "Grpc-Status:"} {
		if i := bytes.LastIndex(r.tail, []byte(name)); i >= 0 {
			rest := r.tail[i+len(name):]
			if j := bytes.IndexAny(rest, "\r\n"); j >= 0 {
				rest = rest[:j]
			}
			return strings.TrimSpace(string(rest))
		}
	}
	return ""
}

func grpcCodeName(status string) string {
	n, err := strconv.Atoi(status)
	if err != nil || n < 0 || n > 16 {
		return "unknown"
	}
	if n == 0 {
		return "ok"
	}
	return connect.Code(n).String()
}

// errorBodyCode reads the code of a Connect error ({"code": "not_found"}) or
// of the plain route's google.rpc.Status ({"code": 5}); failing both, it
// names the code the HTTP status stands for.
func errorBodyCode(body []byte, status int) string {
	var named struct {
		Code json.RawMessage `json:"code"`
	}
	if json.Unmarshal(body, &named) == nil && len(named.Code) > 0 {
		var name string
		if json.Unmarshal(named.Code, &name) == nil && name != "" {
			return name
		}
		var number int
		if json.Unmarshal(named.Code, &number) == nil && number > 0 && number <= 16 {
			return connect.Code(number).String()
		}
	}
	switch status {
	case http.StatusBadRequest:
		return connect.CodeInvalidArgument.String()
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated.String()
	case http.StatusForbidden:
		return connect.CodePermissionDenied.String()
	case http.StatusNotFound:
		return connect.CodeNotFound.String()
	case http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType:
		return connect.CodeUnimplemented.String()
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return connect.CodeResourceExhausted.String()
	}
	return connect.CodeUnknown.String()
}
