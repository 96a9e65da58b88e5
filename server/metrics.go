package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"connectrpc.com/grpchealth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
)

// metrics are the server's Prometheus series. Each server has a registry
// of its own, so several servers in one process (tests, the demo) never
// share counters.
type metrics struct {
	registry      *prometheus.Registry
	calls         *prometheus.CounterVec
	callDuration  *prometheus.HistogramVec
	refused       *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	connections   prometheus.Gauge
	inFlight      prometheus.GaugeFunc
	handshakeTime prometheus.Histogram
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "echoloop_calls_total",
			Help: "Calls answered, by protocol, procedure and Connect code.",
		}, []string{"protocol", "procedure", "code"}),
		callDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "echoloop_call_duration_seconds",
			Help:    "Time from request to the end of the answer, by protocol and procedure.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100µs to about 26s
		}, []string{"protocol", "procedure"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "echoloop_handshakes_refused_total",
			Help: "TLS handshakes refused, by reason (see the reason values in the server's logs).",
		}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "echoloop_reloads_total",
			Help: "Reloads of certificates, CA bundle or revocation list, by what was reloaded and result.",
		}, []string{"what", "result"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "echoloop_connections_open",
			Help: "TCP connections open, handshaking or established.",
		}),
		// The count lives in the server, which reads it when a drain
		// times out; the gauge only reports it.
		inFlight: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "echoloop_calls_in_flight",
			Help: "Calls being answered now; a drain waits for them.",
		}, func() float64 { return float64(s.inFlight.Load()) }),
		handshakeTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "echoloop_handshake_duration_seconds",
			Help:    "Time to complete a TLS handshake, successful ones only.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12), // 0.5ms to about 1s
		}),
	}
	m.registry.MustRegister(
		m.calls, m.callDuration, m.refused, m.reloads, m.connections, m.inFlight, m.handshakeTime,
		expiryCollector{s},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// expiryCollector reports, at scrape time, the seconds left on the server
// certificate and on each trusted CA, so an alert can fire before either
// expires whatever reloads happened in between.
type expiryCollector struct{ s *Server }

var expiryDesc = prometheus.NewDesc(
	"echoloop_certificate_expiry_seconds",
	"Seconds until a certificate in use expires (negative once expired).",
	[]string{"role", "subject", "serial"}, nil,
)

func (c expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (c expiryCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.s.material.Load()
	if m == nil {
		return
	}
	now := time.Now()
	ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue,
		m.leaf.NotAfter.Sub(now).Seconds(), "server", m.leaf.Subject.String(), m.leaf.SerialNumber.Text(16))
	for _, ca := range m.cas {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue,
			ca.NotAfter.Sub(now).Seconds(), "client_ca", ca.Subject.String(), ca.SerialNumber.Text(16))
	}
}

// serveMetrics serves /metrics and /healthz in plain HTTP on the metrics
// address until the returned stop is called.
func (s *Server) serveMetrics(ctx context.Context) (stop func(), err error) {
	addr := s.opts.metricsAddr
	if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("server: listening for metrics on %s: %w", addr, err)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("GET /healthz", s.healthz)
	plain := &http.Server{Handler: mux, ReadHeaderTimeout: s.opts.readHeaderTimeout}
	s.metricsAddr.Store(ln.Addr().String())
	go func() { _ = plain.Serve(ln) }()
	s.log.Info("serving metrics", KeyAddr, ln.Addr().String())
	return func() { _ = plain.Close() }, nil
}

// MetricsAddr is the address the plain metrics listener is bound to, once
// Serve has started it; empty otherwise.
func (s *Server) MetricsAddr() string {
	addr, _ := s.metricsAddr.Load().(string)
	return addr
}

// healthz answers 200 while the server is serving and 503 once it drains,
// for health checks that cannot present a client certificate.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	resp, err := s.health.Check(r.Context(), &grpchealth.CheckRequest{Service: echov1connect.EchoServiceName})
	if err != nil || resp.Status != grpchealth.StatusServing {
		http.Error(w, "NOT_SERVING", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "SERVING\n")
}
