package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/vanguard"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/durationpb"

	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
)

// metricsPath serves Prometheus metrics on the mTLS port, to the same
// policy as the RPCs.
const metricsPath = "/metrics"

// compressMinBytes is the smallest message the server compresses.
const compressMinBytes = 1 << 10

// PlainHTTPPath is the route that takes a JSON POST and reaches the same
// Echo handler, with the same interceptors, as the RPC protocols.
const PlainHTTPPath = "/v1/echo"

// The protocol names echoloop reports in EchoResponse.connection.protocol.
const (
	ProtocolConnect = "connect"
	ProtocolGRPC    = "grpc"
	ProtocolGRPCWeb = "grpc-web"
	ProtocolHTTP    = "http"
)

// Bounds on what a caller may ask of the delayed and streaming calls, so
// that no single request can hold the server for long. Clients check them
// before calling, to name their own flag rather than relay a refusal.
const (
	// MaxDelay is the longest EchoRequest.delay the server waits.
	MaxDelay = 30 * time.Second
	// MaxStreamCount is the most echoes one EchoStream call may ask for.
	MaxStreamCount = 10000
	// MaxStreamInterval is the longest pause EchoStream makes between echoes.
	MaxStreamInterval = time.Minute
)

// echoService answers Echo with what the server verified of the caller.
type echoService struct{}

var _ echov1connect.EchoServiceHandler = echoService{}

func (echoService) Echo(
	ctx context.Context,
	req *connect.Request[echov1.EchoRequest],
) (*connect.Response[echov1.EchoResponse], error) {
	delay, err := bounded("delay", req.Msg.GetDelay(), MaxDelay)
	if err != nil {
		return nil, err
	}
	if delay > 0 {
		if err := sleep(ctx, delay); err != nil {
			return nil, err
		}
	}
	answer, err := echoOf(ctx, req.Msg.GetMessage(), req.Peer().Protocol)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(answer), nil
}

func (echoService) EchoStream(
	ctx context.Context,
	req *connect.Request[echov1.EchoStreamRequest],
	stream *connect.ServerStream[echov1.EchoStreamResponse],
) error {
	count := req.Msg.GetCount()
	if count == 0 {
		count = 1
	}
	if count > MaxStreamCount {
		return connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("count %d is over the limit of %d", count, MaxStreamCount))
	}
	interval, err := bounded("interval", req.Msg.GetInterval(), MaxStreamInterval)
	if err != nil {
		return err
	}

	for i := uint32(1); i <= count; i++ {
		if i > 1 && interval > 0 {
			if err := sleep(ctx, interval); err != nil {
				return err
			}
		}
		// Built afresh for every message: the echo reports the connection
		// as it is at that moment, identity included.
		answer, err := echoOf(ctx, req.Msg.GetMessage(), req.Peer().Protocol)
		if err != nil {
			return err
		}
		if err := stream.Send(&echov1.EchoStreamResponse{Index: i, Echo: answer}); err != nil {
			if ctx.Err() != nil {
				return ended(ctx)
			}
			return err
		}
	}
	return nil
}

func (echoService) EchoChat(
	ctx context.Context,
	stream *connect.BidiStream[echov1.EchoChatRequest, echov1.EchoChatResponse],
) error {
	for i := uint32(1); ; i++ {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		answer, err := echoOf(ctx, msg.GetMessage(), stream.Peer().Protocol)
		if err != nil {
			return err
		}
		if err := stream.Send(&echov1.EchoChatResponse{Index: i, Echo: answer}); err != nil {
			return err
		}
	}
}

// bounded reads an optional duration field and refuses one that is
// malformed, negative or over limit.
func bounded(field string, d *durationpb.Duration, limit time.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	value := d.AsDuration()
	if d.CheckValid() != nil || value < 0 || value > limit {
		return 0, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("%s must be between 0 and %s", field, limit))
	}
	return value, nil
}

// echoOf is the answer to one message: the message, the verified identity
// of the connection and the facts of the transport.
func echoOf(ctx context.Context, message, connectProtocol string) (*echov1.EchoResponse, error) {
	conn := connInfoFrom(ctx)
	if conn == nil || conn.peer == nil {
		// The listener requires a verified client certificate, so this is
		// reached only if the handler is mounted on some other server.
		return nil, connect.NewError(connect.CodeUnauthenticated,
			errors.New("no verified client certificate on this connection"))
	}
	request := requestInfoFrom(ctx)
	return &echov1.EchoResponse{
		Message: message,
		Peer:    conn.peer,
		Connection: &echov1.Connection{
			Protocol:    protocolName(connectProtocol, request.protocol),
			HttpVersion: request.httpVersion,
			TlsVersion:  conn.tlsVersion,
			CipherSuite: conn.cipherSuite,
			Alpn:        conn.alpn,
			ServerName:  conn.serverName,
			Resumed:     conn.resumed,
		},
	}, nil
}

// sleep waits for d or until the call ends, and reports why it ended early
// in the code a client expects: deadline_exceeded or canceled.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ended(ctx)
	}
}

// deadlineGrace is how close to its deadline a call may be cancelled and
// still count as having run out of time. A client gives up at its own
// deadline and cancels the stream; the server's copy of that deadline was
// started later, when the request arrived (after the connection and its
// handshake, for a first call), so the cancellation reaches the server a
// little before the server's deadline passes: a few milliseconds on
// loopback, more across a network or under load.
const deadlineGrace = 500 * time.Millisecond

// ended is the error of a call whose context is done: deadline_exceeded
// when its deadline passed, or was about to when the client gave up;
// canceled otherwise.
func ended(ctx context.Context) error {
	code := connect.CodeCanceled
	deadline, hasDeadline := ctx.Deadline()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) ||
		(hasDeadline && time.Until(deadline) < deadlineGrace) {
		code = connect.CodeDeadlineExceeded
	}
	return connect.NewError(code, ctx.Err())
}

// protocolName is the protocol the request arrived with, as the server's
// front door classified it; a handler mounted elsewhere falls back on
// connect-go's own view.
func protocolName(connectProtocol, classified string) string {
	if classified != "" {
		return classified
	}
	switch connectProtocol {
	case connect.ProtocolGRPC:
		return ProtocolGRPC
	case connect.ProtocolGRPCWeb:
		return ProtocolGRPCWeb
	}
	return ProtocolConnect
}

// routes builds the one handler behind the port: Echo over every protocol,
// the plain JSON route, health and reflection.
func (s *Server) routes() (http.Handler, error) {
	handlerOptions := []connect.HandlerOption{
		connect.WithReadMaxBytes(s.opts.maxMessageBytes),
		connect.WithSendMaxBytes(s.opts.maxMessageBytes),
		// Compressing a few hundred bytes costs more CPU than it saves
		// bandwidth; it would also hide gRPC-Web trailers from the access
		// log, which reads their status from the end of the body.
		connect.WithCompressMinBytes(compressMinBytes),
		connect.WithCompression("gzip", newLimitedGzip(s.opts.maxMessageBytes), newGzipWriter),
		connect.WithInterceptors(authorize(s.log)),
	}
	// Echo's JSON shows every field, false and empty ones too, so the
	// answer has the same shape whatever the connection, and refuses
	// unknown fields, so a misspelt "mesage" is an error, not a silent
	// empty echo.
	//
	// An echo grows with its request, so its answers are held to the limit
	// here; health and reflection answer with what the schema fixes.
	echoOptions := append(handlerOptions, connect.WithCodec(strictJSON{}),
		connect.WithInterceptors(limitAnswers(s.opts.maxMessageBytes)))

	echoPath, echoHandler := echov1connect.NewEchoServiceHandler(echoService{}, echoOptions...)

	// The plain route is a transcoding rule given in code rather than an
	// annotation in the schema, so the wire contract stays one small file.
	// vanguard turns the JSON POST into a Connect call to the very same
	// handler, so the interceptors and limits are the RPC ones.
	schema, err := unaryEchoSchema()
	if err != nil {
		return nil, fmt.Errorf("server: configuring the plain HTTP route: %w", err)
	}
	transcoder, err := vanguard.NewTranscoder(
		[]*vanguard.Service{vanguard.NewServiceWithSchema(schema, echoHandler)},
		vanguard.WithRules(&annotations.HttpRule{
			Selector: echov1connect.EchoServiceName + ".Echo",
			Pattern:  &annotations.HttpRule_Post{Post: PlainHTTPPath},
			Body:     "*",
		}),
		vanguard.WithCodec(func(res vanguard.TypeResolver) vanguard.Codec {
			return &vanguard.JSONCodec{
				MarshalOptions:   protojson.MarshalOptions{Resolver: res, EmitUnpopulated: true},
				UnmarshalOptions: protojson.UnmarshalOptions{Resolver: res},
			}
		}),
		vanguard.WithDefaultServiceOptions(
			// The handler speaks JSON too: vanguard hands the body over as
			// it came and the answer back as the handler wrote it, rather
			// than re-encoding each as protobuf in between.
			vanguard.WithTargetCodecs(strictJSON{}.Name()),
			vanguard.WithMaxMessageBufferBytes(uint32(s.opts.maxMessageBytes)), //nolint:gosec // G115: validate keeps it within 1 GiB
		),
	)
	if err != nil {
		return nil, fmt.Errorf("server: configuring the plain HTTP route: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle(echoPath, echoHandler)
	mux.Handle(PlainHTTPPath, plainJSON(transcoder))
	mux.Handle(grpchealth.NewHandler(s.health, handlerOptions...))
	reflector := grpcreflect.NewStaticReflector(echov1connect.EchoServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, handlerOptions...))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, handlerOptions...))
	mux.Handle("GET "+metricsPath, s.allowedOnly(s.metrics.handler()))
	return s.logCalls(limitBodies(mux, s.opts.maxMessageBytes)), nil
}

// allowedOnly applies the policy to a plain HTTP handler, which the RPC
// interceptor does not see.
func (s *Server) allowedOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if conn := connInfoFrom(r.Context()); conn == nil || conn.peer == nil || !conn.allowed {
			http.Error(w, "this client certificate is not allowed by this server's policy", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// plainJSON admits only JSON POSTs to the plain route, and answers anything
// else with a google.rpc.Status in JSON, as the route's other errors are.
//
// A request with no content type, or with the form type that curl -d sends
// unless told otherwise, is read as JSON: the route takes nothing else, and
// refusing what the user meant to send helps no one.
func plainJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeStatus(w, http.StatusMethodNotAllowed, connect.CodeUnimplemented,
				fmt.Sprintf("%s takes POST with a JSON body, not %s", PlainHTTPPath, r.Method))
			return
		}
		contentType := r.Header.Get("Content-Type")
		mediaType := contentType
		if contentType != "application/json" { // what nearly every client sends, as is
			mediaType, _, _ = mime.ParseMediaType(contentType)
		}
		switch mediaType {
		case "application/json":
		case "", "application/x-www-form-urlencoded":
			r.Header.Set("Content-Type", "application/json")
		default:
			writeStatus(w, http.StatusUnsupportedMediaType, connect.CodeInvalidArgument,
				fmt.Sprintf("%s takes a JSON body, not %q: send Content-Type: application/json",
					PlainHTTPPath, mediaType))
			return
		}
		if err := checkServerTimeout(r.Header.Get(serverTimeoutHeader)); err != nil {
			// Read first, as the handler would, within the message limit:
			// answered while the client is still sending, the stream is
			// reset over HTTP/2, and curl reports the reset, not the answer.
			_, _ = io.Copy(io.Discard, r.Body)
			writeStatus(w, http.StatusBadRequest, connect.CodeInvalidArgument, err.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// serverTimeoutHeader carries the plain route's deadline, in seconds, as
// vanguard reads it.
const serverTimeoutHeader = "X-Server-Timeout"

// checkServerTimeout refuses a deadline vanguard would refuse in words of
// its own, as plain text, or pass on converted to milliseconds for
// connect-go to refuse as a value the client never sent. NaN and the
// infinities parse as numbers but say nothing about when to give up.
func checkServerTimeout(value string) error {
	if value == "" {
		return nil
	}
	const unit = "send the call's timeout in seconds, as a decimal number such as 2.5"
	seconds, err := strconv.ParseFloat(value, 64)
	switch {
	case errors.Is(err, strconv.ErrRange) && seconds > 0:
		return fmt.Errorf("%s %q is too large: %s", serverTimeoutHeader, value, unit)
	case err != nil || math.IsNaN(seconds) || math.IsInf(seconds, 0):
		return fmt.Errorf("%s %q is not a number of seconds: %s", serverTimeoutHeader, value, unit)
	case seconds < 0:
		return fmt.Errorf("%s %q is negative: %s", serverTimeoutHeader, value, unit)
	}
	return nil
}

// writeStatus writes an error in the plain route's format, a google.rpc.Status
// in JSON.
func writeStatus(w http.ResponseWriter, httpStatus int, code connect.Code, message string) {
	body, _ := json.Marshal(map[string]any{"code": int(code), "message": message, "details": []any{}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}

// unaryEchoSchema is EchoService with only its Echo method, for the
// transcoder. vanguard applies a rule's selector as a prefix, so the rule
// for echo.v1.EchoService.Echo would also claim EchoStream and EchoChat,
// and the same route for three methods is refused. A schema without them
// keeps the rule to Echo; the streams are served by the RPC route alone.
func unaryEchoSchema() (protoreflect.ServiceDescriptor, error) {
	file := protodesc.ToFileDescriptorProto(echov1.File_echo_v1_echo_proto)
	for _, svc := range file.GetService() {
		if svc.GetName() != "EchoService" {
			continue
		}
		var unary []*descriptorpb.MethodDescriptorProto
		for _, m := range svc.GetMethod() {
			if m.GetName() == "Echo" {
				unary = append(unary, m)
			}
		}
		svc.Method = unary
	}
	fd, err := protodesc.NewFile(file, protoregistry.GlobalFiles)
	if err != nil {
		return nil, fmt.Errorf("building the Echo-only schema: %w", err)
	}
	return fd.Services().ByName("EchoService"), nil
}

// strictJSON is Echo's JSON codec; see routes for why it differs from
// connect-go's default.
type strictJSON struct{}

func (strictJSON) Name() string { return "json" }

func (strictJSON) Marshal(v any) ([]byte, error) {
	msg, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("encoding %T: not a protobuf message", v)
	}
	return protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(msg)
}

func (strictJSON) Unmarshal(data []byte, v any) error {
	msg, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("decoding into %T: not a protobuf message", v)
	}
	if len(data) == 0 {
		return errors.New("the request body is empty: send a JSON object such as {\"message\": \"hi\"}")
	}
	return protojson.Unmarshal(data, msg)
}
