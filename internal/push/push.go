// Package push delivers the events of push consumer groups to their HTTP
// endpoints. Every replica runs a Deliverer; for each push group it is one
// more consumer of the group, under a name of its own, so the group's own
// semantics hold: each event is in flight at one replica at a time, an
// event not settled within the ack deadline goes to another, and after
// max_deliveries it is a dead letter.
//
// Each attempt POSTs the event's JSON, signed as the Standard Webhooks
// specification says. A 2xx answer acknowledges the event; any other
// answer (redirects are not followed), a timeout or a failed connection
// hands it back (a nack) to be delivered again after an exponential
// backoff with jitter, capped by the group's ack deadline; a failed last
// attempt is handed back at once, and the store turns it into a dead
// letter.
package push

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderexpiry/orderexpiry/internal/backoff"
	"github.com/orderexpiry/orderexpiry/internal/consume"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// The outcomes of one attempt, as Observer.Pushed hears them.
const (
	// OutcomeAcked: the endpoint answered 2xx; the event is acknowledged.
	OutcomeAcked = "acked"
	// OutcomeFailed: the endpoint answered with another status.
	OutcomeFailed = "failed"
	// OutcomeTimeout: no answer within the group's push timeout.
	OutcomeTimeout = "timeout"
	// OutcomeUnreachable: the connection failed (refused, reset, DNS, TLS).
	OutcomeUnreachable = "unreachable"
	// OutcomeRefused: the policy refused the address the host resolved to.
	OutcomeRefused = "refused"
	// OutcomeCancelled: the attempt was cut short, by a stop of this
	// replica or a change or deletion of its group; the event was handed
	// back uncounted (order.GroupStore.Release).
	OutcomeCancelled = "cancelled"
)

// Header names beside the Standard Webhooks ones.
const (
	// HeaderAttempt carries the delivery's attempt, 1 for the first.
	HeaderAttempt = "orderexpiry-delivery-attempt"
)

const (
	// groupsPoll is how often the list of push groups is read again.
	groupsPoll = time.Second
	// firstRetry is the backoff of the first retry; each next one doubles,
	// up to the group's ack deadline (the most a nack may ask for).
	firstRetry = 500 * time.Millisecond
	// settleTimeout bounds an ack or a nack.
	settleTimeout = 5 * time.Second
	// maxResponseBytes is how much of an answer's body is read (and
	// dropped), so that its connection can be used again; a longer body
	// costs the connection, not memory.
	maxResponseBytes = 4 << 10
	// maxResponseHeaderBytes bounds an answer's headers: an endpoint that
	// sends more fails the attempt. With Go's default of 10 MiB, one group
	// of max_concurrency 100 could be made to hold 1 GB.
	maxResponseHeaderBytes = 16 << 10

	dialTimeout   = 10 * time.Second
	dialKeepAlive = 30 * time.Second
)

// tracerName names the tracer of delivery attempts.
const tracerName = "github.com/orderexpiry/orderexpiry/internal/push"

// Observer hears the outcome of each attempt.
type Observer interface {
	Pushed(group, outcome string)
}

// Options are what a Deliverer is built from.
type Options struct {
	// Store holds the groups.
	Store order.GroupStore
	// Policy says which endpoints may be called.
	Policy Policy
	// Encode writes an event as the body of a request: the JSON of the
	// API's ExpirationEvent.
	Encode func(order.Event) ([]byte, error)
	// Appended, when set, returns the log's position and a channel closed
	// when the log grows past it (watch.Hub.Appended), so that a new event
	// is pushed at once rather than at the next poll.
	Appended func() (order.Cursor, <-chan struct{})
	// DropRepeats, when set, takes each batch of deliveries and returns
	// those to push, leaving out repeats of expirations the group had
	// (watch.Hub.DropRepeats).
	DropRepeats func(ctx context.Context, gs order.GroupStore, group string, ds []order.Delivery) []order.Delivery
	// Consumer is this replica's consumer name in every push group; empty:
	// one made of the host name, the process id and random bytes.
	Consumer string
	// Observer, when set, hears each attempt's outcome.
	Observer Observer
	// Logger: nil means slog.Default().
	Logger *slog.Logger
	// StopTimeout bounds Run's return once its context ends: the requests
	// in flight may finish until a quarter of it (at most 2s) is left;
	// then they are cancelled and their events handed back uncounted, in
	// what is left. 0 cancels them at once.
	StopTimeout time.Duration
}

// Deliverer pushes the events of every push group. Run it once.
type Deliverer struct {
	opts   Options
	log    *slog.Logger
	client *http.Client
	tracer trace.Tracer
}

// New returns a Deliverer.
func New(opts Options) *Deliverer {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Consumer == "" {
		opts.Consumer = ConsumerName()
	}
	transport := &http.Transport{
		// No proxy: the policy checks the address dialed, which would be
		// the proxy's.
		Proxy:               nil,
		DialContext:         opts.Policy.dialer().DialContext,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: dialTimeout,
		MaxIdleConnsPerHost: 100,
		// Also the HTTP/2 header list limit (SETTINGS_MAX_HEADER_LIST_SIZE).
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		IdleConnTimeout:        90 * time.Second,
	}
	return &Deliverer{
		opts: opts,
		log:  opts.Logger,
		client: &http.Client{
			Transport: transport,
			// A redirect is an answer that is not 2xx, not a place to go.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		tracer: otel.Tracer(tracerName),
	}
}

// ConsumerName returns a consumer name for this process: "push-", the host
// name, the process id and 4 random bytes, so that two replicas never share
// one.
func ConsumerName() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "push-" + host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b)
}

// Consumer returns the consumer name the Deliverer uses in every group.
func (d *Deliverer) Consumer() string { return d.opts.Consumer }

// WebhookID is the webhook-id of an event of a group, "<group>_" followed
// by the event's id (order.EventID): the same for every attempt (and after
// a redrive), so that a receiver can drop a repeat.
func WebhookID(group string, id order.AckID) string {
	return group + "_" + id.EventID.String()
}

// Run delivers until ctx ends: it reads the push groups every second and
// runs one worker for each, replacing a worker when its group is deleted or
// created again with other settings. A worker replaced has its requests
// cancelled and ends on its own: its end never holds up the other groups.
// Run returns nil within Options.StopTimeout of the end of ctx.
func (d *Deliverer) Run(ctx context.Context) error {
	type running struct {
		g    order.Group
		stop context.CancelFunc
		done chan struct{}
	}
	// requests ends the requests in flight, a while after ctx ends;
	// settles ends the acks, nacks and releases after them.
	grace := d.opts.StopTimeout - min(d.opts.StopTimeout/4, 2*time.Second)
	requests, endRequests := context.WithCancel(context.WithoutCancel(ctx))
	settles, endSettles := context.WithCancel(context.WithoutCancel(ctx))
	defer endSettles()
	defer endRequests()
	context.AfterFunc(ctx, func() { time.AfterFunc(grace, endRequests) })
	context.AfterFunc(requests, func() { time.AfterFunc(d.opts.StopTimeout-grace, endSettles) })

	workers := map[string]*running{}
	var retired []*running
	retire := func(r *running) {
		r.stop()
		retired = append(retired, r)
	}
	defer func() {
		for _, r := range workers {
			<-r.done
		}
		for _, r := range retired {
			<-r.done
		}
	}()
	d.log.Info("push delivery is on", "consumer", d.opts.Consumer, "allow_hosts", d.opts.Policy.AllowHosts,
		"allow_private", d.opts.Policy.AllowPrivate, "allow_http", d.opts.Policy.AllowHTTP)
	var bo backoff.Backoff
	refused := map[string]bool{}
	tick := time.NewTicker(groupsPoll)
	defer tick.Stop()
	for {
		retired = slices.DeleteFunc(retired, func(r *running) bool {
			select {
			case <-r.done:
				return true
			default:
				return false
			}
		})
		groups, err := d.opts.Store.Groups(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.Debug("push: could not list the groups; trying again", "err", err)
			if !bo.Wait(ctx) {
				return nil
			}
			continue
		}
		bo.Reset()
		seen := map[string]bool{}
		for _, g := range groups {
			if !g.Push.Enabled() {
				continue
			}
			// A replica whose policy refuses the URL (its flags differ from
			// those of the replica that created the group) leaves the group
			// to the others rather than failing its events.
			if _, err := d.opts.Policy.CheckURL(g.Push.URL); err != nil {
				if !refused[g.ID] {
					d.log.Warn("push: this replica's policy refuses a group's endpoint; it leaves the group to the other replicas", "group", g.ID, "err", err)
					refused[g.ID] = true
				}
				continue
			}
			delete(refused, g.ID)
			seen[g.ID] = true
			if r, ok := workers[g.ID]; ok {
				if r.g.SameSettings(g) && r.g.CreatedAt.Equal(g.CreatedAt) {
					continue
				}
				retire(r)
			}
			take, stopTaking := context.WithCancel(ctx)
			reqs, stopRequests := context.WithCancel(requests)
			r := &running{g: g, done: make(chan struct{}), stop: func() {
				stopTaking()
				stopRequests()
			}}
			workers[g.ID] = r
			go func() {
				defer close(r.done)
				defer r.stop()
				d.work(take, reqs, settles, g)
			}()
		}
		for id, r := range workers {
			if !seen[id] {
				retire(r)
				delete(workers, id)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// worker pushes the events of one group: it is the consume loop's Sink,
// each delivery a request on a goroutine of its own, up to the group's
// MaxConcurrency at once.
type worker struct {
	d    *Deliverer
	g    order.Group
	url  *url.URL
	hook *standardwebhooks.Webhook
	// sem holds a token for each request in flight; only the loop's
	// goroutine adds one, so that Room stays true until its Puts.
	sem chan struct{}
	// freed tells the loop that a request ended and its slot is free.
	freed chan struct{}
	// running are the requests in flight, under reqs.
	running sync.WaitGroup
	reqs    context.Context
	// settles bounds the acks, nacks and releases.
	settles context.Context
}

// work takes a group's events until ctx ends, up to the group's
// MaxConcurrency in flight at once, and pushes them under reqs; at the end
// it waits for the requests in flight, which end with reqs. The acks,
// nacks and releases run under settles.
func (d *Deliverer) work(ctx, reqs, settles context.Context, g order.Group) {
	u, err := d.opts.Policy.CheckURL(g.Push.URL)
	if err == nil {
		err = CheckSecret(g.Push.Secret)
	}
	var hook *standardwebhooks.Webhook
	if err == nil {
		hook, err = standardwebhooks.NewWebhook(g.Push.Secret)
	}
	if err != nil {
		d.log.Error("push: a group's push settings are unusable; its events are not pushed from this replica", "group", g.ID, "err", err)
		return
	}
	w := &worker{d: d, g: g, url: u, hook: hook, sem: make(chan struct{}, g.Push.MaxConcurrency), freed: make(chan struct{}, 1), reqs: reqs, settles: settles}
	defer w.running.Wait()
	src := consume.Source{Store: d.opts.Store, Group: g, Consumer: d.opts.Consumer, Appended: d.opts.Appended, DropRepeats: d.opts.DropRepeats}
	// It ends only with ctx: the worker's Failed retries.
	_ = consume.Run(ctx, src, w)
}

// Room is the slots free for requests.
func (w *worker) Room() int { return cap(w.sem) - len(w.sem) }

// Put starts a delivery's request; Room said there is a slot for it.
func (w *worker) Put(_ context.Context, dl order.Delivery) error {
	w.sem <- struct{}{}
	w.running.Go(func() {
		defer func() {
			<-w.sem
			select {
			case w.freed <- struct{}{}:
			default:
			}
		}()
		w.attempt(w.reqs, dl)
	})
	return nil
}

// Failed lets the loop try again after a backoff, until ctx ends.
func (w *worker) Failed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	w.d.log.Debug("push: could not take deliveries; trying again", "group", w.g.ID, "err", err)
	return nil
}

// Wake says that a request ended: its slot is free.
func (w *worker) Wake() <-chan struct{} { return w.freed }

// Woken asks for a look at every partition: a freed slot may take an
// event that waited for one anywhere.
func (w *worker) Woken() (bool, error) { return true, nil }

// attempt makes one delivery attempt under ctx and settles it: an ack for a
// 2xx answer, a nack with the backoff otherwise, and a release when ctx
// ended first (a stop, or the group changed or deleted): an attempt cut
// short is not counted, so that a stop during an event's last attempt
// never makes it a dead letter.
func (w *worker) attempt(ctx context.Context, dl order.Delivery) {
	g := w.g
	id := WebhookID(g.ID, dl.AckID)
	ctx, span := w.d.tracer.Start(ctx, "push "+g.ID, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("orderexpiry.group", g.ID),
		attribute.Int("orderexpiry.delivery_attempt", dl.AckID.Attempt),
		attribute.String("webhook.id", id),
		attribute.String("http.request.method", http.MethodPost),
		attribute.String("server.address", w.url.Hostname()),
	))
	defer span.End()

	outcome, status, err := w.post(ctx, id, dl)
	if outcome != OutcomeAcked && ctx.Err() != nil {
		outcome = OutcomeCancelled
	}
	span.SetAttributes(attribute.String("orderexpiry.push.outcome", outcome))
	if status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	if w.d.opts.Observer != nil {
		w.d.opts.Observer.Pushed(g.ID, outcome)
	}
	// The outcome is recorded even when ctx ended meanwhile.
	sctx, cancel := context.WithTimeout(w.settles, settleTimeout)
	defer cancel()
	ids := []order.AckID{dl.AckID}
	switch outcome {
	case OutcomeAcked:
		if st, err := w.d.opts.Store.Ack(sctx, g.ID, ids); err != nil || st[0] != order.AckDone {
			w.d.log.Warn("push: an event the endpoint took could not be acknowledged; it is delivered again", "group", g.ID, "webhook_id", id, "status", ackStatus(st), "err", err)
		}
		return
	case OutcomeCancelled:
		// A deleted group's events are gone with it: nothing to hand back.
		if _, err := w.d.opts.Store.Release(sctx, g.ID, ids); err != nil && order.KindOf(err) != order.KindNotFound {
			w.d.log.Warn("push: could not hand back an event whose attempt was cut short; it is delivered again after its ack deadline", "group", g.ID, "webhook_id", id, "err", err)
		}
		return
	}
	last := dl.AckID.Attempt >= g.MaxDeliveries
	retry := time.Duration(0)
	if !last {
		retry = Backoff(dl.AckID.Attempt, g.AckDeadline)
	}
	if _, err := w.d.opts.Store.Nack(sctx, g.ID, ids, retry, FailureReason(outcome, status, err)); err != nil {
		w.d.log.Debug("push: could not hand an event back; it is delivered again after its ack deadline", "group", g.ID, "webhook_id", id, "err", err)
	}
	level, msg := slog.LevelDebug, "push: a delivery attempt failed; the event is retried"
	if last {
		level, msg = slog.LevelWarn, "push: the last delivery attempt failed; the event becomes a dead letter"
	}
	w.d.log.Log(ctx, level, msg, "group", g.ID, "webhook_id", id, "attempt", dl.AckID.Attempt,
		"outcome", outcome, "status", status, "err", err)
}

// ackStatus names the first status of an ack, for the log.
func ackStatus(st []order.AckStatus) string {
	if len(st) == 0 {
		return ""
	}
	return st[0].String()
}

// post sends one signed request and classifies its answer.
func (w *worker) post(ctx context.Context, id string, dl order.Delivery) (outcome string, status int, err error) {
	body, err := w.d.opts.Encode(dl.Event)
	if err != nil {
		return OutcomeFailed, 0, err
	}
	now := time.Now()
	sig, err := w.hook.Sign(id, now, body)
	if err != nil {
		return OutcomeFailed, 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, w.g.Push.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, w.url.String(), bytes.NewReader(body))
	if err != nil {
		return OutcomeFailed, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "orderexpiry-push")
	req.Header.Set(standardwebhooks.HeaderWebhookID, id)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, sig)
	req.Header.Set(HeaderAttempt, strconv.Itoa(dl.AckID.Attempt))
	resp, err := w.d.client.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, errInternalAddress):
			return OutcomeRefused, 0, err
		case rctx.Err() != nil && ctx.Err() == nil:
			return OutcomeTimeout, 0, err
		}
		return OutcomeUnreachable, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return OutcomeFailed, resp.StatusCode, errors.New("the endpoint answered " + resp.Status)
	}
	return OutcomeAcked, resp.StatusCode, nil
}

// Backoff is the wait before the attempt after a failed one: firstRetry
// doubled with each attempt, at most the ack deadline, of which a random
// part (up to half) is taken off, so that the retries of events that
// failed together spread out.
func Backoff(attempt int, ackDeadline time.Duration) time.Duration {
	return backoff.Policy{First: firstRetry, Max: ackDeadline, Less: 0.5}.Delay(attempt - 1)
}

// FailureReason is what a failed attempt's nack records, for the dead
// letter it may make: the endpoint's HTTP status when it answered ("HTTP
// 503 Service Unavailable"), the outcome and the error otherwise.
func FailureReason(outcome string, status int, err error) string {
	if status != 0 {
		r := "HTTP " + strconv.Itoa(status)
		if text := http.StatusText(status); text != "" {
			r += " " + text
		}
		return r
	}
	if err == nil {
		return outcome
	}
	return order.CleanReason(outcome + ": " + err.Error())
}
