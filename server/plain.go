package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
)

// The plain route, POST /v1/echo with the EchoRequest as its JSON body, is
// the Connect protocol's unary JSON call under another path: the same body
// in, the same body out, through the same handler and interceptors. What
// differs is said here and nowhere else:
//
//   - the deadline comes in seconds, in X-Server-Timeout, as REST gateways
//     and connectrpc.com/vanguard take it, rather than in milliseconds in
//     Connect-Timeout-Ms;
//   - an error is a google.rpc.Status in JSON, {"code": 5, "message": ...,
//     "details": [...]}, with the code as a number, where Connect names it
//     ({"code": "not_found"}). The HTTP statuses are the same: Connect took
//     its table from the one gRPC gateways use.
//
// A general transcoder (vanguard, which served this route before) decodes
// and re-encodes every message and flushes every answer in parts; for a
// route whose body maps one to one, that cost the plain route about half
// again the CPU of a Connect call.
const plainTimeoutHeader = "X-Server-Timeout"

// plainRoute serves the plain route with echo, the Connect handler of the
// Echo service.
func plainRoute(echo http.Handler) http.Handler {
	return plainJSON(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		call := *r
		u := *r.URL
		u.Path = echov1connect.EchoServiceEchoProcedure
		call.URL = &u
		if timeout := r.Header.Get(plainTimeoutHeader); timeout != "" {
			ms, err := timeoutMillis(timeout)
			if err != nil {
				writeStatus(w, http.StatusBadRequest, connect.CodeInvalidArgument, err.Error())
				return
			}
			r.Header.Del(plainTimeoutHeader)
			r.Header.Set("Connect-Timeout-Ms", ms)
		}
		answer := &plainAnswer{ResponseWriter: w}
		echo.ServeHTTP(answer, &call)
		answer.finish()
	}))
}

// timeoutMillis turns X-Server-Timeout's seconds into Connect's
// milliseconds, rounded up so that a short deadline stays a deadline.
func timeoutMillis(seconds string) (string, error) {
	s, err := strconv.ParseFloat(seconds, 64)
	if err != nil || s <= 0 || math.IsInf(s, 0) {
		return "", fmt.Errorf("%s %q is not a positive number of seconds", plainTimeoutHeader, seconds)
	}
	// Connect takes at most ten digits of milliseconds.
	return strconv.FormatFloat(min(math.Ceil(s*1000), 9_999_999_999), 'f', 0, 64), nil
}

// plainAnswer passes a successful answer through as it comes and holds
// back an error's body, to write it as a google.rpc.Status.
type plainAnswer struct {
	http.ResponseWriter
	status int
	failed bytes.Buffer // the Connect error body, when status is not 200
}

func (a *plainAnswer) WriteHeader(status int) {
	if a.status != 0 {
		return
	}
	a.status = status
	if status != http.StatusOK {
		return // written, with the translated body, by finish
	}
	a.ResponseWriter.WriteHeader(status)
}

func (a *plainAnswer) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.WriteHeader(http.StatusOK)
	}
	if a.status != http.StatusOK {
		return a.failed.Write(p)
	}
	return a.ResponseWriter.Write(p)
}

// finish writes a held-back error.
func (a *plainAnswer) finish() {
	if a.status == 0 || a.status == http.StatusOK {
		return
	}
	var connectErr struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"details"`
	}
	code := connect.CodeUnknown
	message := strings.TrimSpace(a.failed.String())
	if json.Unmarshal(a.failed.Bytes(), &connectErr) == nil && connectErr.Code != "" {
		_ = code.UnmarshalText([]byte(connectErr.Code))
		message = connectErr.Message
	}
	details := []json.RawMessage{}
	for _, d := range connectErr.Details {
		if detail, ok := statusDetail(d.Type, d.Value); ok {
			details = append(details, detail)
		}
	}
	header := a.ResponseWriter.Header()
	header.Del("Content-Length")
	header.Del("Content-Encoding")
	writeStatusDetails(a.ResponseWriter, a.status, code, message, details)
}

// statusDetail is a Connect error detail as the google.protobuf.Any that
// a google.rpc.Status carries, when its type is known to this program.
func statusDetail(typeName, value string) (json.RawMessage, bool) {
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(value, "="))
	if err != nil {
		return nil, false
	}
	detail, err := protojson.Marshal(&anypb.Any{TypeUrl: "type.googleapis.com/" + typeName, Value: raw})
	if err != nil {
		return nil, false
	}
	return detail, true
}
