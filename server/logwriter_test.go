package server_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/echoloop/echoloop/server"
)

// countingWriter records each write it is given.
type countingWriter struct {
	mu     sync.Mutex
	writes []string
	err    error
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *countingWriter) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

func TestLogWriterBatchesCallsAndWritesWarningsAtOnce(t *testing.T) {
	t.Parallel()
	out := &countingWriter{}
	logs := server.NewLogWriter(out)
	log := slog.New(logs.Handler(slog.NewJSONHandler(logs, nil)))

	for range 3 {
		log.Info("call")
	}
	if got := out.all(); len(got) != 0 {
		t.Fatalf("info lines written at once: %q; want them held back", got)
	}
	deadline := time.Now().Add(10 * server.LogFlushDelay)
	for len(out.all()) == 0 && time.Now().Before(deadline) {
		time.Sleep(server.LogFlushDelay / 10)
	}
	if got := out.all(); len(got) != 1 || strings.Count(got[0], `"msg":"call"`) != 3 {
		t.Fatalf("writes after the delay = %q; want the three lines in one write", got)
	}

	log.Info("call")
	log.Warn("tls handshake refused")
	got := out.all()
	if len(got) != 2 || !strings.Contains(got[1], `"msg":"call"`) || !strings.Contains(got[1], "refused") {
		t.Fatalf("writes = %q; want the warning written at once, with the line before it", got)
	}
}

func TestLogWriterFlushAndErrors(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logs := server.NewLogWriter(&buf)
	_, _ = logs.Write([]byte("one\n"))
	if err := logs.Flush(); err != nil || buf.String() != "one\n" {
		t.Fatalf("Flush = %v, wrote %q; want one line", err, buf.String())
	}

	broken := &countingWriter{err: errors.New("disk full")}
	logs = server.NewLogWriter(broken)
	_, _ = logs.Write([]byte("lost\n"))
	if err := logs.Flush(); err == nil {
		t.Fatal("Flush to a failing writer returned nil")
	}
	if _, err := logs.Write([]byte("more\n")); err == nil {
		t.Error("Write after a failed flush returned nil; want the error kept")
	}
}
