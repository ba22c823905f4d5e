// Package metrics exposes the service's Prometheus metrics: per-RPC counts
// and latency (from the grpc-ecosystem middleware) and the life of orders.
// The domain packages know nothing of Prometheus; they report through the
// small hooks this package's methods fit.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Metrics holds the collectors of one server.
type Metrics struct {
	registry *prometheus.Registry
	// GRPC counts and times every RPC; its interceptors go on the server.
	GRPC *GRPCMetrics

	closed   *prometheus.CounterVec
	created  prometheus.Counter
	caughtUp prometheus.Counter
	lateness prometheus.Histogram
	catchUps prometheus.Counter
	repeats  prometheus.Counter
	rewinds  prometheus.Counter

	deliveries   *prometheus.CounterVec
	redeliveries *prometheus.CounterVec
	ackAge       *prometheus.HistogramVec
	pushes       *prometheus.CounterVec
}

// New registers the collectors, including the Go runtime's and the
// process's. The gauges read from the parts of the server are registered
// by Watch, once those parts exist.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		GRPC:     newGRPCMetrics(rpcBuckets),
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
		catchUps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderexpiry_watch_catchups_total",
			Help: "Times a watcher on this replica fell more than -watch-buffer events behind and went back to reading the expiration log until it caught up.",
		}),
		repeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderexpiry_expiration_repeats_skipped_total",
			Help: "Expirations repeated because Redis lost the tail of its log, not sent again to a watcher or group of this replica that had them.",
		}),
		rewinds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderexpiry_log_rewinds_total",
			Help: "Times this replica found that a partition of the expiration log lost events it had read (Redis lost the tail of its log).",
		}),
	}
	m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "orderexpiry_group_deliveries_total",
		Help: "Deliveries of expirations to the consumers of a group by this replica, redeliveries included.",
	}, []string{"group"})
	m.redeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "orderexpiry_group_redeliveries_total",
		Help: "Deliveries by this replica of an expiration that a group's consumers had before (not acknowledged in time, handed back, or redriven).",
	}, []string{"group"})
	m.ackAge = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "orderexpiry_group_ack_age_seconds",
		Help:    "Time from an expiration to its acknowledgement through this replica, by group.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"group"})
	m.pushes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "orderexpiry_push_deliveries_total",
		Help: "Attempts by this replica to push a group's expiration to its endpoint, by outcome: acked (2xx), failed (another status), timeout, unreachable (the connection failed) or refused (the host resolved to an internal address).",
	}, []string{"group", "outcome"})
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.GRPC, m.created, m.closed, m.caughtUp, m.lateness, m.catchUps, m.repeats, m.rewinds,
		m.deliveries, m.redeliveries, m.ackAge, m.pushes,
	)
	for _, o := range []string{"completed", "cancelled", "expired"} {
		m.closed.WithLabelValues(o)
	}
	return m
}

// rpcBuckets are the bounds of grpc_server_handling_seconds.
var rpcBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

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
	// Groups returns the consumer groups' states, read from the store.
	Groups func() []GroupState
	// SlotRetries counts the calls to a Redis Cluster made again because
	// their slot was moving between masters; nil for a store that has no
	// slots.
	SlotRetries func() uint64
}

// GroupState is a consumer group's state, as the gauges show it.
type GroupState struct {
	ID                             string
	Backlog, InFlight, DeadLetters int64
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
	if src.Groups != nil {
		m.registry.MustRegister(groupCollector(src.Groups))
	}
	if src.SlotRetries != nil {
		m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "orderexpiry_redis_slot_retries_total",
			Help: "Calls to the Redis Cluster made again because their partition's slot was moving between masters (MOVED, ASK or TRYAGAIN during a resharding).",
		}, func() float64 { return float64(src.SlotRetries()) }))
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

// Delivered counts a delivery to a group's consumer.
func (m *Metrics) Delivered(group string, attempt int) {
	m.deliveries.WithLabelValues(group).Inc()
	if attempt > 1 {
		m.redeliveries.WithLabelValues(group).Inc()
	}
}

// Acknowledged observes how long after its expiration an event was
// acknowledged.
func (m *Metrics) Acknowledged(group string, age time.Duration) {
	m.ackAge.WithLabelValues(group).Observe(max(age, 0).Seconds())
}

// Pushed counts an attempt to push a group's event, by its outcome.
func (m *Metrics) Pushed(group, outcome string) { m.pushes.WithLabelValues(group, outcome).Inc() }

// WatchCatchUp counts a watcher that fell behind its buffer and reads on
// from the log.
func (m *Metrics) WatchCatchUp() { m.catchUps.Inc() }

// RepeatSkipped counts a repeated expiration not sent again (see
// watch.Options.OnRepeat).
func (m *Metrics) RepeatSkipped() { m.repeats.Inc() }

// LogRewound counts a partition of the log found to have lost events the
// replica had read (see watch.Options.OnRewind).
func (m *Metrics) LogRewound(int) { m.rewinds.Inc() }

// Published observes an event as it reaches this replica's watchers.
func (m *Metrics) Published(ev order.Event, at time.Time) {
	m.lateness.Observe(max(at.Sub(ev.Deadline), 0).Seconds())
}

var (
	groupBacklog = prometheus.NewDesc("orderexpiry_group_backlog",
		"Expirations not yet delivered to the group's consumers, read from the store at each scrape.", []string{"group"}, nil)
	groupInFlight = prometheus.NewDesc("orderexpiry_group_in_flight",
		"Expirations delivered to the group's consumers and not yet acknowledged.", []string{"group"}, nil)
	groupDeadLetters = prometheus.NewDesc("orderexpiry_group_dead_letters",
		"The group's dead letters: expirations not acknowledged after max_deliveries deliveries.", []string{"group"}, nil)
)

// groupCollector reads the groups' states at each scrape.
type groupCollector func() []GroupState

func (groupCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- groupBacklog
	ch <- groupInFlight
	ch <- groupDeadLetters
}

func (c groupCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c() {
		ch <- prometheus.MustNewConstMetric(groupBacklog, prometheus.GaugeValue, float64(g.Backlog), g.ID)
		ch <- prometheus.MustNewConstMetric(groupInFlight, prometheus.GaugeValue, float64(g.InFlight), g.ID)
		ch <- prometheus.MustNewConstMetric(groupDeadLetters, prometheus.GaugeValue, float64(g.DeadLetters), g.ID)
	}
}
