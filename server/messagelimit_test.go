package server_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/echoloop/echoloop/client"
	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

// answerRefusal is how an answer over a limit of limitText is refused,
// after the size, which depends on the codec and the identity.
func answerRefusal(limitText string) string {
	return "bytes over this server's limit of " + limitText +
		" (echoloop serve --max-message-bytes): the echo adds the caller's identity " +
		"to the message, so send a shorter one"
}

func checkAnswerRefusal(t *testing.T, message, limitText string) {
	t.Helper()
	if !strings.HasPrefix(message, "answer message of ") ||
		!strings.HasSuffix(message, answerRefusal(limitText)) {
		t.Errorf("message = %q, want the answer's size and %q", message, answerRefusal(limitText))
	}
}

func TestAnswerOverTheLimitIsRefusedTheSameOnEveryProtocol(t *testing.T) {
	t.Parallel()
	const limit = 4 << 10
	srv := servertest.Start(t, server.WithMaxMessageBytes(limit))
	c := newTestClient(t, srv, srv.Client)
	// The request fits; its echo, with the identity added, does not.
	justUnder := strings.Repeat("a", limit-40)

	for _, p := range client.Protocols() {
		t.Run("refused/"+string(p), func(t *testing.T) {
			t.Parallel()
			_, err := c.Echo(callContext(t), p, justUnder)
			if got := connect.CodeOf(err); got != connect.CodeResourceExhausted {
				t.Fatalf("code = %v (%v), want resource_exhausted", got, err)
			}
			checkAnswerRefusal(t, connectMessage(err), "4 KiB")
		})
		if p == client.HTTP {
			continue
		}
		t.Run("refused/"+string(p)+" stream", func(t *testing.T) {
			t.Parallel()
			err := c.EchoStream(callContext(t), p, &echov1.EchoStreamRequest{Message: justUnder, Count: 2},
				func(*echov1.EchoStreamResponse) error { return nil })
			if got := connect.CodeOf(err); got != connect.CodeResourceExhausted {
				t.Fatalf("code = %v (%v), want resource_exhausted", got, err)
			}
			checkAnswerRefusal(t, connectMessage(err), "4 KiB")
		})
		t.Run("ok/"+string(p)+" after a refusal", func(t *testing.T) {
			t.Parallel()
			if _, err := c.Echo(callContext(t), p, strings.Repeat("a", limit/2)); err != nil {
				t.Errorf("an echo well within the limit failed: %v", err)
			}
		})
	}
}

func TestCompressedRequestOverTheLimitIsRefusedAsAnyOther(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	srv := servertest.Start(t, server.WithMaxMessageBytes(limit))
	hc := mtlsHTTPClient(t, srv)
	// A megabyte of one letter is a kilobyte or so gzipped: it passes the
	// limit as sent and goes over it once expanded.
	expanding := strings.Repeat("a", 1<<20)

	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"connect json", []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := append(tc.opts, connect.WithSendGzip())
			rpc := echov1connect.NewEchoServiceClient(hc, srv.URL, opts...)
			_, err := rpc.Echo(callContext(t), connect.NewRequest(&echov1.EchoRequest{Message: expanding}))
			if got := connect.CodeOf(err); got != connect.CodeResourceExhausted {
				t.Fatalf("code = %v (%v), want resource_exhausted", got, err)
			}
			const want = "request message over this server's limit of 64 KiB " +
				"(echoloop serve --max-message-bytes)"
			if msg := connectMessage(err); msg != want {
				t.Errorf("message = %q, want %q", msg, want)
			}

			small := strings.Repeat("b", limit/2)
			res, err := rpc.Echo(callContext(t), connect.NewRequest(&echov1.EchoRequest{Message: small}))
			if err != nil {
				t.Fatalf("a compressed request within the limit failed: %v", err)
			}
			if res.Msg.GetMessage() != small {
				t.Errorf("echoed %d bytes, want the %d sent", len(res.Msg.GetMessage()), len(small))
			}
		})
	}
}

// curlJSON runs curl with args and reads its answer, which ends with the
// HTTP status and content type on a line of their own.
func curlJSON(
	t *testing.T,
	args ...string,
) (status int, contentType string, answer map[string]any) {
	t.Helper()
	args = append([]string{"--silent", "--show-error", "--max-time", "20",
		"--write-out", "\\n%{http_code} %{content_type}"}, args...)
	out, err := exec.CommandContext(callContext(t), curlPath(t), args...).Output()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, stderrOf(err))
	}
	cut := bytes.LastIndexByte(out, '\n')
	if cut < 0 {
		t.Fatalf("curl wrote %q", out)
	}
	if _, err := fmt.Sscan(string(out[cut+1:]), &status, &contentType); err != nil {
		t.Fatalf("curl wrote %q", out[cut+1:])
	}
	if err := json.Unmarshal(out[:cut], &answer); err != nil {
		t.Fatalf("HTTP %d answer is not JSON: %v\n%.300s", status, err, out[:cut])
	}
	return status, contentType, answer
}

func TestCurlMalformedServerTimeout(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	caFile, certFile, keyFile := srv.WriteFiles(t, t.TempDir())
	call := func(t *testing.T, timeout string) (int, string, map[string]any) {
		return curlJSON(t, "--cacert", caFile, "--cert", certFile, "--key", keyFile,
			"-H", "X-Server-Timeout: "+timeout, "-d", `{"message":"hi"}`, srv.URL+server.PlainHTTPPath)
	}

	for _, value := range []string{"abc", "-1", "-0.5", "NaN", "Inf", "1.2.3", ".", "2s", "1e400"} {
		t.Run("refused/"+value, func(t *testing.T) {
			t.Parallel()
			status, contentType, answer := call(t, value)
			if status != http.StatusBadRequest || contentType != "application/json" {
				t.Errorf("HTTP %d %s, want 400 application/json", status, contentType)
			}
			// google.rpc.Status, as every other refusal on the plain route.
			if answer["code"] != float64(connect.CodeInvalidArgument) {
				t.Errorf("code = %v, want 3 (invalid_argument); answer %v", answer["code"], answer)
			}
			message, _ := answer["message"].(string)
			if !strings.HasPrefix(message, fmt.Sprintf("X-Server-Timeout %q ", value)) ||
				!strings.Contains(message, "seconds, as a decimal number") {
				t.Errorf("message = %q, want the value sent and the header's unit", message)
			}
			if value == "1e400" && !strings.Contains(message, "is too large") {
				t.Errorf("message = %q, want it called too large: it is a number", message)
			}
		})
	}

	for _, value := range []string{"2.5", "10", "0.75", "1e3", "99999999999"} {
		t.Run("ok/"+value, func(t *testing.T) {
			t.Parallel()
			if status, _, answer := call(t, value); status != http.StatusOK || answer["message"] != "hi" {
				t.Errorf("HTTP %d %v, want the echo", status, answer)
			}
		})
	}
}

// TestCurlMessagesNearTheLimit sends what a user would with the default
// limit: a body just under it, whose echo is over, and a gzipped body
// that is small as sent and over the limit once expanded.
func TestCurlMessagesNearTheLimit(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := srv.WriteFiles(t, dir)
	tls := []string{"--cacert", caFile, "--cert", certFile, "--key", keyFile}

	justUnder := filepath.Join(dir, "just-under.json")
	body := `{"message":"` + strings.Repeat("a", server.DefaultMaxMessageBytes-40) + `"}`
	if err := os.WriteFile(justUnder, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = zw.Write([]byte(`{"message":"` + strings.Repeat("a", 50<<20) + `"}`))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	expanding := filepath.Join(dir, "expanding.json.gz")
	if err := os.WriteFile(expanding, zipped.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{"/echo.v1.EchoService/Echo", server.PlainHTTPPath} {
		t.Run("refused/answer over the limit on "+path, func(t *testing.T) {
			t.Parallel()
			status, _, answer := curlJSON(t, append(tls, "-H", "Content-Type: application/json",
				"--data-binary", "@"+justUnder, srv.URL+path)...)
			if status != http.StatusTooManyRequests {
				t.Errorf("HTTP %d, want 429", status)
			}
			message, _ := answer["message"].(string)
			checkAnswerRefusal(t, message, "4 MiB")
		})
	}

	t.Run("refused/gzipped request over the limit on the connect route", func(t *testing.T) {
		t.Parallel()
		status, _, answer := curlJSON(t, append(tls, "-H", "Content-Type: application/json",
			"-H", "Content-Encoding: gzip", "--data-binary", "@"+expanding,
			srv.URL+"/echo.v1.EchoService/Echo")...)
		const want = "request message over this server's limit of 4 MiB " +
			"(echoloop serve --max-message-bytes)"
		if status != http.StatusTooManyRequests || answer["message"] != want {
			t.Errorf("HTTP %d %v, want 429 and %q", status, answer, want)
		}
	})
}
