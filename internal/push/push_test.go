package push_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/orderexpiry/orderexpiry/internal/memstore"
	"github.com/orderexpiry/orderexpiry/internal/push"
	"github.com/orderexpiry/orderexpiry/internal/rpc"
	"github.com/orderexpiry/orderexpiry/internal/storetest"
)

// outcomes records what the Deliverer told its observer.
type outcomes struct {
	mu  sync.Mutex
	got []string
}

func (o *outcomes) Pushed(_, outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, outcome)
}

func (o *outcomes) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.got)
}

// run starts a memory store with a push group at endpoint, a Deliverer
// with the policy, and one order that expires at once; it returns the store
// and the observer.
func run(t *testing.T, endpoint string, policy push.Policy, maxDeliveries int) (*memstore.Store, *outcomes) {
	t.Helper()
	s, obs, _ := runStoppable(t, endpoint, policy, maxDeliveries)
	return s, obs
}

// runStoppable is run, with a function that stops the Deliverer and waits
// for it.
func runStoppable(t *testing.T, endpoint string, policy push.Policy, maxDeliveries int) (*memstore.Store, *outcomes, func()) {
	t.Helper()
	s := memstore.New(memstore.Options{Retention: time.Hour})
	storetest.RunStore(t, s)
	g := storetest.PushSettings("hooks", endpoint)
	g.AckDeadline, g.MaxDeliveries, g.Push.Timeout = time.Second, maxDeliveries, 300*time.Millisecond
	if _, _, err := s.CreateGroup(t.Context(), g, nil, 10); err != nil {
		t.Fatal(err)
	}
	obs := &outcomes{}
	d := push.New(push.Options{Store: s, Policy: policy, Encode: rpc.EventJSON, Observer: obs, Consumer: "replica-1", StopTimeout: 2 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v after its context ended, want nil", err)
			}
		})
	}
	t.Cleanup(stop)
	if _, _, err := s.Checkout(t.Context(), "o-1", 10*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	return s, obs, stop
}

// waitDead waits until the group has one dead letter.
func waitDead(t *testing.T, s *memstore.Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, st, err := s.Group(t.Context(), "hooks")
		if err != nil {
			t.Fatal(err)
		}
		if st.DeadLetters == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter after 10s: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hostOf(t *testing.T, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname()
}

// TestRedirectNotFollowed: a 3xx answer is a failed attempt, never a place
// to go; after max_deliveries the event is a dead letter.
func TestRedirectNotFollowed(t *testing.T) {
	var followed atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed.Add(1)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	s, obs := run(t, srv.URL+"/hook", push.Policy{AllowHosts: []string{hostOf(t, srv.URL)}, AllowPrivate: true, AllowHTTP: true}, 2)
	waitDead(t, s)
	if n := followed.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
	if got := obs.list(); !slices.Equal(got, []string{push.OutcomeFailed, push.OutcomeFailed}) {
		t.Errorf("outcomes %v, want two failed attempts", got)
	}
}

// TestInternalAddressRefusedAtDial: a host name the allow-list names but
// that resolves to loopback is refused after DNS, at every attempt; the
// endpoint is never reached and the event ends a dead letter.
func TestInternalAddressRefusedAtDial(t *testing.T) {
	var reached atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached.Add(1) }))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	endpoint := "http://localhost:" + u.Port() + "/hook"
	s, obs := run(t, endpoint, push.Policy{AllowHosts: []string{"localhost"}, AllowHTTP: true}, 2)
	waitDead(t, s)
	if n := reached.Load(); n != 0 {
		t.Errorf("the endpoint at a loopback address was reached %d times", n)
	}
	if got := obs.list(); !slices.Equal(got, []string{push.OutcomeRefused, push.OutcomeRefused}) {
		t.Errorf("outcomes %v, want two refused attempts", got)
	}
}

// TestAttemptSpans: each attempt is a span of the global tracer provider,
// with the group, the attempt, the answer's status and an error status for
// a failed attempt.
func TestAttemptSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	s, obs := run(t, srv.URL, push.Policy{AllowHosts: []string{hostOf(t, srv.URL)}, AllowPrivate: true, AllowHTTP: true}, 3)
	deadline := time.Now().Add(10 * time.Second)
	for len(rec.Ended()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d spans ended after 10s, want 2; outcomes %v", len(rec.Ended()), obs.list())
		}
		time.Sleep(20 * time.Millisecond)
	}
	spans := rec.Ended()
	want := []struct {
		attempt int64
		status  int64
		code    codes.Code
		outcome string
	}{{1, 500, codes.Error, push.OutcomeFailed}, {2, 204, codes.Unset, push.OutcomeAcked}}
	for i, w := range want {
		sp := spans[i]
		attrs := map[attribute.Key]attribute.Value{}
		for _, kv := range sp.Attributes() {
			attrs[kv.Key] = kv.Value
		}
		if sp.Name() != "push hooks" || attrs["orderexpiry.group"].AsString() != "hooks" ||
			attrs["orderexpiry.delivery_attempt"].AsInt64() != w.attempt || attrs["http.response.status_code"].AsInt64() != w.status ||
			attrs["orderexpiry.push.outcome"].AsString() != w.outcome || sp.Status().Code != w.code {
			t.Errorf("span %d: %s, attributes %v, status %v; want attempt %d, status code %d, outcome %s, span status %v",
				i, sp.Name(), sp.Attributes(), sp.Status(), w.attempt, w.status, w.outcome, w.code)
		}
	}
	if _, st, err := s.Group(t.Context(), "hooks"); err != nil || st.InFlight != 0 || st.DeadLetters != 0 || st.Backlog != 0 {
		t.Errorf("group after the event was acknowledged: %+v, %v; want nothing left", st, err)
	}
}

// TestReplicaRefusingLeavesGroup: a replica whose policy does not allow a
// group's URL (its flags differ from the creator's) takes none of the
// group's events: they wait for a replica that may push them, rather than
// fail here.
func TestReplicaRefusingLeavesGroup(t *testing.T) {
	var reached atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached.Add(1) }))
	t.Cleanup(srv.Close)
	s, obs := run(t, srv.URL, push.Policy{AllowHosts: []string{"hooks.example.com"}, AllowPrivate: true, AllowHTTP: true}, 2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, st, err := s.Group(t.Context(), "hooks")
		if err != nil {
			t.Fatal(err)
		}
		if st.Backlog == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the event did not reach the group within 10s: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Two rounds of the deliverer's look at the groups.
	time.Sleep(2500 * time.Millisecond)
	if _, st, err := s.Group(t.Context(), "hooks"); err != nil || st.Backlog != 1 || st.InFlight != 0 || st.DeadLetters != 0 {
		t.Errorf("group after 2.5s: %+v, %v; want the event still in the backlog", st, err)
	}
	if n, got := reached.Load(), obs.list(); n != 0 || len(got) != 0 {
		t.Errorf("the endpoint was reached %d times, outcomes %v; want no attempt", n, got)
	}
}

// TestStopFinishesAttempt: a replica that stops while a request is open
// waits for its answer (within the stop timeout) and records it.
func TestStopFinishesAttempt(t *testing.T) {
	started := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		select {
		case started <- struct{}{}:
		default:
		}
		time.Sleep(150 * time.Millisecond) // within the 300ms push timeout
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	s, obs, stop := runStoppable(t, srv.URL, push.Policy{AllowHosts: []string{hostOf(t, srv.URL)}, AllowPrivate: true, AllowHTTP: true}, 1)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no request within 10s")
	}
	stop()
	if _, st, err := s.Group(t.Context(), "hooks"); err != nil || st.Backlog != 0 || st.InFlight != 0 || st.DeadLetters != 0 {
		t.Errorf("group right after the stop: %+v, %v; want the event acknowledged", st, err)
	}
	if got := obs.list(); !slices.Equal(got, []string{push.OutcomeAcked}) {
		t.Errorf("outcomes %v, want [%s]", got, push.OutcomeAcked)
	}
}
