package server

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Bounds on how long and how much [LogWriter] holds back.
const (
	// LogFlushDelay is the longest a buffered log line waits.
	LogFlushDelay = 100 * time.Millisecond
	// logBufferBytes is how much is written at once when lines come
	// faster than the delay.
	logBufferBytes = 64 << 10
)

// LogWriter batches log lines on their way to an [io.Writer], as web
// servers batch their access logs: one write system call per batch rather
// than one per call answered, which on a busy server is a measurable share
// of its CPU. A line waits at most [LogFlushDelay]; lines that go through
// [LogWriter.Handler] at warning level or above, refusals and failures
// among them, are written at once with everything before them.
//
// A process that dies without [LogWriter.Flush] loses what is waiting: up
// to a tenth of a second of calls. Safe for concurrent use.
type LogWriter struct {
	mu    sync.Mutex
	w     io.Writer
	buf   []byte
	armed bool  // a flush is scheduled
	err   error // the first write error, returned by every later write
}

// NewLogWriter batches writes to w.
func NewLogWriter(w io.Writer) *LogWriter { return &LogWriter{w: w} }

// Write takes one log line (or several) to write soon.
func (l *LogWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	l.buf = append(l.buf, p...)
	switch {
	case len(l.buf) >= logBufferBytes:
		return len(p), l.flushLocked()
	case !l.armed:
		l.armed = true
		time.AfterFunc(LogFlushDelay, func() { _ = l.Flush() })
	}
	return len(p), nil
}

// Flush writes out everything waiting.
func (l *LogWriter) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flushLocked()
}

func (l *LogWriter) flushLocked() error {
	l.armed = false
	if len(l.buf) == 0 || l.err != nil {
		return l.err
	}
	_, l.err = l.w.Write(l.buf)
	// A burst can grow the buffer large; keep it only while it is of a
	// size that lines fill again soon.
	if cap(l.buf) > logBufferBytes {
		l.buf = nil
	} else {
		l.buf = l.buf[:0]
	}
	return l.err
}

// Handler wraps h, which must write to l, so that every record at warning
// level or above is written out at once.
func (l *LogWriter) Handler(h slog.Handler) slog.Handler { return urgentHandler{inner: h, l: l} }

type urgentHandler struct {
	inner slog.Handler
	l     *LogWriter
}

func (h urgentHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

func (h urgentHandler) Handle(ctx context.Context, r slog.Record) error {
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	if r.Level >= slog.LevelWarn {
		return h.l.Flush()
	}
	return nil
}

func (h urgentHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return urgentHandler{inner: h.inner.WithAttrs(attrs), l: h.l}
}

func (h urgentHandler) WithGroup(name string) slog.Handler {
	return urgentHandler{inner: h.inner.WithGroup(name), l: h.l}
}
