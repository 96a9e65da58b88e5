package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCallExpectRefusal(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	url := startServe(t, certs, "--certs", certs)

	// A whole set from another `pki init`: its client certificate comes
	// from a CA the server does not trust.
	foreign := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", foreign, "--name", "intruder"); code != exitOK {
		t.Fatal(errOut)
	}
	intruder := func(args ...string) []string {
		return append([]string{"call", "--url", url, "--certs", foreign,
			"--cacert", filepath.Join(certs, "ca.crt"), "--expect-refusal"}, args...)
	}

	cases := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    []string
		wantStderr string
	}{
		{
			name:     "ok/refused on every protocol",
			args:     intruder("--protocol", "all"),
			wantCode: exitOK,
			wantOut: []string{
				"grpc-web: unavailable: the server does not trust the CA that issued",
				"refused by the server on all 4 protocols, as expected",
			},
		},
		{
			name:     "ok/refused on one protocol",
			args:     intruder("--protocol", "grpc"),
			wantCode: exitOK,
			wantOut: []string{
				"grpc: unavailable: the server does not trust the CA that issued",
				"refused by the server on the one protocol called, as expected",
			},
		},
		{
			name:     "ok/as JSON",
			args:     intruder("--protocol", "all", "--json"),
			wantCode: exitOK,
			wantOut:  []string{`{"error":{"code":"unavailable"`},
		},
		{
			name:       "fails/a trusted client is accepted",
			args:       []string{"call", "--url", url, "--certs", certs, "--protocol", "all", "--expect-refusal"},
			wantCode:   exitFail,
			wantOut:    []string{"identical on all 4 protocols"},
			wantStderr: "the server accepted this client over connect, grpc, grpc-web, http, but it was expected to refuse it",
		},
		{
			name:       "fails/nothing listening",
			args:       []string{"call", "--url", "https://" + freeLoopbackAddr(t), "--certs", foreign, "--expect-refusal"},
			wantCode:   exitFail,
			wantOut:    []string{"connect: unavailable: nothing is listening"},
			wantStderr: "but connect failed for another reason",
		},
		{
			name:       "fails/the server's certificate is not trusted",
			args:       []string{"call", "--url", url, "--certs", foreign, "--protocol", "all", "--expect-refusal"},
			wantCode:   exitFail,
			wantOut:    []string{"this client does not trust the server's certificate"},
			wantStderr: "but connect, grpc, grpc-web, http failed for another reason",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runCommand(t.Context(), tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, out, errOut)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("stdout lacks %q:\n%s", want, out)
				}
			}
			if !strings.Contains(errOut, tc.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", errOut, tc.wantStderr)
			}
		})
	}
}

// TestChatIsInteractive runs call --chat as a real process on a pipe that
// stays open: each line written is echoed before standard input ends, and
// a signal ends the call at once although its read of standard input is
// still blocked.
func TestChatIsInteractive(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	url := startServe(t, certs, "--certs", certs)

	for _, tc := range []struct {
		protocol string
		signal   os.Signal
	}{
		{"connect", syscall.SIGINT},
		{"grpc-web", syscall.SIGTERM},
	} {
		t.Run(tc.protocol+"/"+tc.signal.String(), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			// --timeout bounds each echo, not the session, which outlasts it.
			chat := exec.CommandContext(ctx, echoloopBinary(t), "call", "--chat", "--certs", certs,
				"--url", url, "--protocol", tc.protocol, "--timeout", "2s")
			stdin, err := chat.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			defer stdin.Close()
			stdout, err := chat.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			errOut := &lockedLog{}
			chat.Stderr = errOut
			if err := chat.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = chat.Process.Kill() })
			echoes := make(chan string)
			go func() {
				defer close(echoes)
				lines := bufio.NewScanner(stdout)
				for lines.Scan() {
					echoes <- lines.Text()
				}
				_, _ = io.Copy(io.Discard, stdout)
			}()

			for i, line := range []string{"first", "second"} {
				if i > 0 {
					time.Sleep(2500 * time.Millisecond) // longer than --timeout
				}
				if _, err := io.WriteString(stdin, line+"\n"); err != nil {
					t.Fatal(err)
				}
				select {
				case echo := <-echoes:
					want := strconv.Itoa(i+1) + `  "` + line + `"  ` + tc.protocol + " over HTTP/2.0  peer CN=client"
					if !strings.HasPrefix(echo, want) {
						t.Errorf("echo of %q = %q, want it to start %q", line, echo, want)
					}
				case <-time.After(20 * time.Second):
					t.Fatalf("no echo of %q while standard input stays open; stderr: %s", line, errOut)
				}
			}

			if err := chat.Process.Signal(tc.signal); err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			go func() { waited <- chat.Wait() }()
			var waitErr error
			select {
			case waitErr = <-waited:
			case <-time.After(20 * time.Second):
				t.Fatalf("call --chat still running after %s with standard input open", tc.signal)
			}
			if code := chat.ProcessState.ExitCode(); code != exitInterrupted ||
				strings.TrimSpace(errOut.String()) != "echoloop: interrupted" {
				t.Errorf("after %s: %v, stderr %q; want exit %d and interrupted",
					tc.signal, waitErr, errOut, exitInterrupted)
			}
		})
	}
}

func TestChatEndsWhenAnEchoIsOverdue(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancelCause(t.Context())
	watch := &echoWatch{timeout: 10 * time.Millisecond, cancel: cancel}
	defer watch.stop()
	watch.sent()
	watch.sent()
	watch.echoed() // one of two: the other is still due

	select {
	case <-ctx.Done():
		if !errors.Is(context.Cause(ctx), errNoEcho) {
			t.Errorf("cancelled by %v, want errNoEcho", context.Cause(ctx))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a line left without its echo never ended the chat")
	}
}

// TestDeadlinesEndTheCallOnBothSides lets a call's --timeout pass while
// the server waits out --delay: the client says the call ran out of time
// after the connection was made, and the server logs deadline_exceeded,
// not canceled, although the client's cancellation reaches it first.
func TestDeadlinesEndTheCallOnBothSides(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	url, logs := startServeLogged(t, certs, "--certs", certs)

	cases := []struct {
		protocol  string
		args      []string
		procedure string
	}{
		{"connect", []string{"--delay", "3s"}, "Echo"},
		{"grpc", []string{"--delay", "3s"}, "Echo"},
		{"grpc-web", []string{"--delay", "3s"}, "Echo"},
		{"http", []string{"--delay", "3s"}, "Echo"},
		{"grpc", []string{"--stream", "3", "--interval", "3s"}, "EchoStream"},
	}
	for _, tc := range cases {
		t.Run(tc.protocol+"/"+tc.procedure, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"call", "--certs", certs, "--url", url, "--protocol", tc.protocol,
				"--timeout", "1s"}, tc.args...)
			_, errOut, code := runCommand(t.Context(), args...)
			if code != exitFail || !strings.Contains(errOut, "deadline_exceeded: the call ran out of time") ||
				!strings.Contains(errOut, "raise --timeout") || strings.Contains(errOut, "firewall") {
				t.Errorf("exit %d, stderr %q; want the call's own deadline named, with --timeout", code, errOut)
			}
			waitForText(t, logs, `"procedure":"/echo.v1.EchoService/`+tc.procedure+`","protocol":"`+
				tc.protocol+`","code":"deadline_exceeded"`)
		})
	}
}
