// Package metrics exposes the service's Prometheus metrics: per-RPC counts
// and latency (from the grpc-ecosystem middleware) and the life of orders.
// The domain packages know nothing of Prometheus; they report through the
// small hooks this package's methods fit.
package metrics

import (
	"net/http"
	"sync"
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

	// mu guards groups: the groups the per-group series above were made
	// for, so that those of a deleted group can be dropped.
	mu     sync.Mutex
	groups map[string]bool
}

// New registers the collectors, including the Go runtime's and the
// process's. The gauges read from the parts of the server are registered
// by Watch, once those parts exist.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		groups:   map[string]bool{},
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
		Help: "Attempts by this replica to push a group's expiration to its endpoint, by outcome: acked (2xx), failed (another status), timeout, unreachable (the connection failed, or the answer's headers passed 16 KiB), refused (the host resolved to an internal address) or cancelled (cut short by a stop of this replica, or by a change or deletion of the group; the event is handed back uncounted).",
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
	// Groups returns the consumer groups' ids and the states it could
	// read, from the store; ok is false when the list could not be read.
	Groups func() (ids []string, states []GroupState, ok bool)
	// SlotRetries counts the calls to a Redis Cluster made again because
	// their slot was moving between masters; nil for a store that has no
	// slots.
	SlotRetries func() uint64
	// Serving says whether health reports SERVING.
	Serving func() bool
	// RedisMemory reads each Redis's memory use and maxmemory; nil for a
	// store that is not Redis.
	RedisMemory func() []RedisMemory
	// Durability is the Redis store's durability mode, strict or fast;
	// empty for the memory store. DurabilityUnsafe says whether Redis's
	// settings break the strict mode's promise, Unconfirmed counts the
	// writes refused because Redis could not confirm them durable in time;
	// both nil for the memory store.
	Durability       string
	DurabilityUnsafe func() bool
	Unconfirmed      func() uint64
}

// RedisMemory is one Redis's (one master's, on a cluster) memory use and
// limit (0: none), in bytes.
type RedisMemory struct {
	Addr      string
	Used, Max int64
}

// GroupState is a consumer group's state, as the gauges show it.
type GroupState struct {
	ID                             string
	Backlog, InFlight, DeadLetters int64
	// OldestUnacked is how long ago the oldest expiration the group has
	// not acknowledged was logged; 0 when there is none.
	OldestUnacked time.Duration
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
	serving := src.Serving
	if serving == nil {
		serving = func() bool { return true }
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	if src.Groups != nil {
		m.registry.MustRegister(groupCollector{read: src.Groups, keep: m.keepGroups})
	}
	if src.RedisMemory != nil {
		m.registry.MustRegister(memoryCollector(src.RedisMemory))
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
	if src.Durability != "" {
		m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "orderexpiry_durability_mode",
			Help:        "1, labelled with the durability mode of the Redis store: strict (an OK survives one Redis failure) or fast (an OK means the Redis master has the write).",
			ConstLabels: prometheus.Labels{"mode": src.Durability},
		}, func() float64 { return 1 }))
	}
	if src.DurabilityUnsafe != nil {
		m.registry.MustRegister(gauge("orderexpiry_redis_durability_unsafe",
			"1 while Redis's settings (appendonly, appendfsync, replicas), read every 10 s, break the strict durability's promise: writes are refused and health says NOT_SERVING.",
			flag(src.DurabilityUnsafe)))
	}
	if src.Unconfirmed != nil {
		m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "orderexpiry_writes_unconfirmed_total",
			Help: "Writes answered UNAVAILABLE in the strict durability because Redis's replicas did not confirm them in time (their outcome is unknown; repeating them is safe).",
		}, func() float64 { return float64(src.Unconfirmed()) }))
	}
	m.registry.MustRegister(
		gauge("orderexpiry_watchers", "Watch streams open on this replica.", func() float64 { return float64(src.Watchers()) }),
		gauge("orderexpiry_serving", "1 while this replica's health (gRPC health and /healthz) says SERVING, 0 while NOT_SERVING: the store is unreachable or its eviction policy unsafe.", flag(serving)),
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

// perGroup are the collectors with a series per group.
func (m *Metrics) perGroup() []interface {
	DeletePartialMatch(prometheus.Labels) int
} {
	return []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.deliveries, m.redeliveries, m.ackAge, m.pushes}
}

// seen notes a group that has series now.
func (m *Metrics) seen(group string) {
	m.mu.Lock()
	m.groups[group] = true
	m.mu.Unlock()
}

// GroupDeleted drops the series of a group: a deleted group's series would
// otherwise stay until the process ends, and a client that creates and
// deletes groups in turn could grow /metrics without bound.
func (m *Metrics) GroupDeleted(group string) {
	m.mu.Lock()
	delete(m.groups, group)
	m.mu.Unlock()
	for _, c := range m.perGroup() {
		c.DeletePartialMatch(prometheus.Labels{"group": group})
	}
}

// keepGroups drops the series of every group not in live, the groups the
// store holds: a group deleted through another replica goes at the next
// scrape.
func (m *Metrics) keepGroups(live map[string]bool) {
	m.mu.Lock()
	var gone []string
	for g := range m.groups {
		if !live[g] {
			gone = append(gone, g)
		}
	}
	m.mu.Unlock()
	for _, g := range gone {
		m.GroupDeleted(g)
	}
}

// Delivered counts a delivery to a group's consumer.
func (m *Metrics) Delivered(group string, attempt int) {
	m.seen(group)
	m.deliveries.WithLabelValues(group).Inc()
	if attempt > 1 {
		m.redeliveries.WithLabelValues(group).Inc()
	}
}

// Acknowledged observes how long after its expiration an event was
// acknowledged.
func (m *Metrics) Acknowledged(group string, age time.Duration) {
	m.seen(group)
	m.ackAge.WithLabelValues(group).Observe(max(age, 0).Seconds())
}

// Pushed counts an attempt to push a group's event, by its outcome.
func (m *Metrics) Pushed(group, outcome string) {
	m.seen(group)
	m.pushes.WithLabelValues(group, outcome).Inc()
}

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
	groupOldest = prometheus.NewDesc("orderexpiry_group_oldest_unacked_age_seconds",
		"Age of the oldest expiration the group has not acknowledged (delivered or not), 0 when there is none.", []string{"group"}, nil)
	redisUsed = prometheus.NewDesc("orderexpiry_redis_memory_used_bytes",
		"Memory Redis uses (INFO memory used_memory), read at each scrape, by Redis (each master of a cluster).", []string{"redis"}, nil)
	redisMax = prometheus.NewDesc("orderexpiry_redis_maxmemory_bytes",
		"Redis's maxmemory (0: no limit), read at each scrape. Under noeviction a Redis that reaches it refuses checkouts.", []string{"redis"}, nil)
)

// memoryCollector reads Redis's memory at each scrape.
type memoryCollector func() []RedisMemory

func (memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- redisUsed
	ch <- redisMax
}

func (c memoryCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c() {
		ch <- prometheus.MustNewConstMetric(redisUsed, prometheus.GaugeValue, float64(r.Used), r.Addr)
		ch <- prometheus.MustNewConstMetric(redisMax, prometheus.GaugeValue, float64(r.Max), r.Addr)
	}
}

// groupCollector reads the groups' states at each scrape, and drops the
// other series of the groups that are no longer there.
type groupCollector struct {
	read func() ([]string, []GroupState, bool)
	keep func(live map[string]bool)
}

func (groupCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- groupBacklog
	ch <- groupInFlight
	ch <- groupDeadLetters
	ch <- groupOldest
}

func (c groupCollector) Collect(ch chan<- prometheus.Metric) {
	ids, states, ok := c.read()
	if !ok {
		return
	}
	live := make(map[string]bool, len(ids))
	for _, id := range ids {
		live[id] = true
	}
	for _, g := range states {
		ch <- prometheus.MustNewConstMetric(groupBacklog, prometheus.GaugeValue, float64(g.Backlog), g.ID)
		ch <- prometheus.MustNewConstMetric(groupInFlight, prometheus.GaugeValue, float64(g.InFlight), g.ID)
		ch <- prometheus.MustNewConstMetric(groupDeadLetters, prometheus.GaugeValue, float64(g.DeadLetters), g.ID)
		ch <- prometheus.MustNewConstMetric(groupOldest, prometheus.GaugeValue, g.OldestUnacked.Seconds(), g.ID)
	}
	c.keep(live)
}
