// Package metrics exposes the service's Prometheus metrics: per-RPC counts
// and latency (from the grpc-ecosystem middleware) and the life of orders.
// The domain packages know nothing of Prometheus; they report through the
// small hooks this package's methods fit.
package metrics

import (
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Metrics holds the collectors of one server.
type Metrics struct {
	registry *prometheus.Registry
	// GRPC counts and times every RPC; its interceptors go on the server.
	GRPC *grpcprom.ServerMetrics

	closed   *prometheus.CounterVec
	created  prometheus.Counter
	caughtUp prometheus.Counter
	lateness prometheus.Histogram
}

// New registers the collectors, including the Go runtime's and the
// process's. The gauges read from the parts of the server are registered
// by Watch, once those parts exist.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		GRPC: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}),
		)),
		created: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderexpiry_orders_checked_out_total",
			Help: "Orders created by Checkout on this replica (retries of a pending order not counted).",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderexpiry_orders_closed_total",
			Help: "Orders closed by this replica, by outcome: completed, cancelled or expired. An expiration is counted by the replica that claimed it (its sweeper, or a call that found the order due).",
		}, []string{"outcome"}),
		caughtUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderexpiry_orders_caught_up_total",
			Help: "Expirations this replica claimed more than a second after their deadline: orders caught up after an outage, a restart or a lost wake-up.",
		}),
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orderexpiry_expiration_lateness_seconds",
			Help:    "Time from an order's deadline to its expiration event reaching this replica's watchers.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.GRPC, m.created, m.closed, m.caughtUp, m.lateness,
	)
	for _, o := range []string{"completed", "cancelled", "expired"} {
		m.closed.WithLabelValues(o)
	}
	return m
}

// Sources are what the gauges read at each scrape.
type Sources struct {
	// Watchers counts the watch streams open on this replica.
	Watchers func() int
	// Subscribed says whether the store hears Redis's expired-key events;
	// nil for a store that needs no subscription.
	Subscribed func() bool
	// EvictionUnsafe says whether Redis's maxmemory-policy could evict the
	// store's keys; nil for a store that cannot evict.
	EvictionUnsafe func() bool
}

// Watch registers the gauges that read src; call it once.
func (m *Metrics) Watch(src Sources) {
	subscribed := src.Subscribed
	if subscribed == nil {
		subscribed = func() bool { return true }
	}
	unsafe := src.EvictionUnsafe
	if unsafe == nil {
		unsafe = func() bool { return false }
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	flag := func(f func() bool) func() float64 {
		return func() float64 {
			if f() {
				return 1
			}
			return 0
		}
	}
	m.registry.MustRegister(
		gauge("orderexpiry_watchers", "Watch streams open on this replica.", func() float64 { return float64(src.Watchers()) }),
		gauge("orderexpiry_subscriber_connected", "1 while this replica's subscription to Redis's expired-key events is up (always 1 on the memory store).", flag(subscribed)),
		gauge("orderexpiry_redis_eviction_policy_unsafe", "1 while Redis's maxmemory-policy, read every 10 s, could evict the store's keys (anything but noeviction with a maxmemory): checkouts are refused and health says NOT_SERVING.", flag(unsafe)),
	)
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// CheckedOut counts a created order.
func (m *Metrics) CheckedOut() { m.created.Inc() }

// Closed counts an order completed or cancelled by a call.
func (m *Metrics) Closed(s order.Status) { m.closed.WithLabelValues(s.String()).Inc() }

// Expired counts expirations this replica claimed, of which caughtUp were
// more than a second late.
func (m *Metrics) Expired(n, caughtUp int) {
	m.closed.WithLabelValues("expired").Add(float64(n))
	m.caughtUp.Add(float64(caughtUp))
}

// Delivered observes an event as it reaches this replica's watchers.
func (m *Metrics) Delivered(ev order.Event, at time.Time) {
	m.lateness.Observe(max(at.Sub(ev.Deadline), 0).Seconds())
}
