package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// pushSecret is the signing secret of the test's push groups; pushKey is
// its base64 part, which must never show in an answer or a log.
const (
	pushSecret = "whsec_" + pushKey
	pushKey    = "C2FrZXRlc3RzZWNyZXRmb3JwdXNoZGVsaXZlcnkxMjM0NTY="
)

// pushFlags let the servers push to the test's receiver on loopback over
// http.
var pushFlags = []string{"-push-allow-hosts=127.0.0.1", "-push-allow-private", "-push-allow-http"}

// pushAttempt is one request the receiver got.
type pushAttempt struct {
	id      string
	attempt int
	event   *pb.ExpirationEvent
	// answered is the status the receiver answered with; 0 when it did
	// not answer (it held the request until the service gave up).
	answered int
	start    time.Time
	end      time.Time
}

// pushReceiver is the test's webhook endpoint. It verifies every request
// with the Standard Webhooks Go library and answers as the order's id says:
// "-fail1" fails the first attempt that reaches it with 500, "-slow1" holds
// it until the service times it out; the path /fail always answers 500. It can be taken down (connections refused) and brought back on the
// same port.
type pushReceiver struct {
	t    *testing.T
	hook *standardwebhooks.Webhook
	addr string

	mu       sync.Mutex
	srv      *http.Server
	attempts map[string][]*pushAttempt // by path, in arrival order
	open     map[string]int            // requests open per webhook-id
	overlaps []string
	bad      []string
}

func startPushReceiver(t *testing.T) *pushReceiver {
	t.Helper()
	hook, err := standardwebhooks.NewWebhook(pushSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := &pushReceiver{t: t, hook: hook, attempts: map[string][]*pushAttempt{}, open: map[string]int{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = lis.Addr().String()
	r.serve(lis)
	t.Cleanup(func() { r.down() })
	return r
}

func (r *pushReceiver) serve(lis net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(r.handle)}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
}

// down closes the listener and every connection: the service's attempts
// are refused until up.
func (r *pushReceiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// up listens again on the same port.
func (r *pushReceiver) up() {
	r.t.Helper()
	var lis net.Listener
	var err error
	for range 50 {
		if lis, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("the receiver could not listen on %s again: %v", r.addr, err)
	}
	r.serve(lis)
}

func (r *pushReceiver) url(path string) string { return "http://" + r.addr + path }

func (r *pushReceiver) handle(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	a := &pushAttempt{id: req.Header.Get(standardwebhooks.HeaderWebhookID), start: time.Now()}
	a.attempt, _ = strconv.Atoi(req.Header.Get("orderexpiry-delivery-attempt"))
	var problem string
	ev := &pb.ExpirationEvent{}
	if err := r.hook.Verify(body, req.Header); err != nil {
		problem = fmt.Sprintf("%s: the signature does not verify: %v", a.id, err)
	} else if err := protojson.Unmarshal(body, ev); err != nil {
		problem = fmt.Sprintf("%s: the body is not an ExpirationEvent: %v: %s", a.id, err, body)
	} else if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
		problem = fmt.Sprintf("%s: %s with Content-Type %q, want a POST of application/json", a.id, req.Method, req.Header.Get("Content-Type"))
	}
	a.event = ev
	r.mu.Lock()
	if problem != "" {
		r.bad = append(r.bad, problem)
	}
	r.open[a.id]++
	if r.open[a.id] > 1 {
		r.overlaps = append(r.overlaps, fmt.Sprintf("%s attempt %d while another attempt of it was open", a.id, a.attempt))
	}
	first := true
	for _, b := range r.attempts[req.URL.Path] {
		if b.id == a.id {
			first = false
		}
	}
	r.attempts[req.URL.Path] = append(r.attempts[req.URL.Path], a)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.open[a.id]--
		a.end = time.Now()
		r.mu.Unlock()
	}()

	id := ev.GetOrderId()
	switch {
	case problem != "":
		a.answered = http.StatusBadRequest
	case req.URL.Path == "/fail":
		a.answered = http.StatusInternalServerError
	case req.URL.Path == "/unavailable":
		a.answered = http.StatusServiceUnavailable
	case first && strings.HasSuffix(id, "-fail1"):
		a.answered = http.StatusInternalServerError
	case first && strings.HasSuffix(id, "-slow1"):
		// Held until the service gives up on it: never answered.
		<-req.Context().Done()
		return
	default:
		a.answered = http.StatusNoContent
	}
	w.WriteHeader(a.answered)
}

// byID returns the attempts at a path by webhook-id, in arrival order.
func (r *pushReceiver) byID(path string) map[string][]pushAttempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]pushAttempt{}
	for _, a := range r.attempts[path] {
		out[a.id] = append(out[a.id], *a)
	}
	return out
}

// acked counts the events at a path that got a 2xx answer.
func (r *pushReceiver) acked(path string) int {
	n := 0
	for _, as := range r.byID(path) {
		for _, a := range as {
			if a.answered/100 == 2 {
				n++
				break
			}
		}
	}
	return n
}

// TestPushDelivery: push groups deliver each event to their endpoint, signed
// so that the Standard Webhooks library verifies it, through failures,
// timeouts and an endpoint that is down for a while: every event is
// acknowledged once, its retries carry the same webhook-id and are never
// open at once, and an endpoint that always fails gets its events
// dead-lettered after max_deliveries. A URL outside the allow-list is
// refused at creation, and the secret never shows. On Redis, three
// replicas deliver together.
func TestPushDelivery(t *testing.T) {
	// At debug level, so that the check that the secret is never logged
	// covers every line the servers may write.
	flags := append([]string{"-log-level=debug"}, pushFlags...)
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		testPushDelivery(t, []*server{startServer(t, nil, flags...)})
	})
	t.Run("redis-3-replicas", func(t *testing.T) {
		t.Parallel()
		r := redistest.Start(t)
		env := map[string]string{"REDIS_URL": r.URL()}
		var replicas []*server
		for range 3 {
			replicas = append(replicas, startServer(t, env, flags...))
		}
		testPushDelivery(t, replicas)
	})
}

func testPushDelivery(t *testing.T, replicas []*server) {
	s := replicas[0]
	ctx := context.Background()
	rcv := startPushReceiver(t)

	// Refused at creation, with what to fix.
	for _, bad := range []struct {
		url, secret, says string
	}{
		{"https://hooks.example.com/expired", pushSecret, "not in this service's allowed push hosts"},
		{"ftp://127.0.0.1/x", pushSecret, `scheme "ftp"`},
		{rcv.url("/ok"), "", "push_config.secret is required"},
		{rcv.url("/ok"), "whsec_short", "push_config.secret"},
	} {
		_, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "refused",
			PushConfig: &pb.PushConfig{Url: bad.url, Secret: bad.secret}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), bad.says) {
			t.Errorf("CreateConsumerGroup with push url %q: %v; want InvalidArgument saying %q", bad.url, err, bad.says)
		}
	}
	code, body := s.restCall(t, "POST", "/v1/groups", `{"groupId":"refused","pushConfig":{"url":"https://evil.example.net/","secret":"`+pushSecret+`"}}`)
	if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body), "-push-allow-hosts") {
		t.Errorf("POST /v1/groups with a host outside the allow-list: %d %v; want 400 naming -push-allow-hosts", code, body)
	}

	const n = 30
	hooks, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "hooks", AckDeadline: durationpb.New(2 * time.Second), MaxDeliveries: 10,
		PushConfig: &pb.PushConfig{Url: rcv.url("/ok"), Secret: pushSecret, MaxConcurrency: 4, Timeout: durationpb.New(300 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "doomed", AckDeadline: durationpb.New(time.Second), MaxDeliveries: 3,
		PushConfig: &pb.PushConfig{Url: rcv.url("/fail"), Secret: pushSecret}}); err != nil {
		t.Fatal(err)
	}
	wantPush := &pb.PushConfig{Url: rcv.url("/ok"), SecretFingerprint: hooks.GetPushConfig().GetSecretFingerprint(), MaxConcurrency: 4, Timeout: durationpb.New(300 * time.Millisecond)}
	if !proto.Equal(hooks.GetPushConfig(), wantPush) || !strings.HasPrefix(wantPush.SecretFingerprint, "sha256:") {
		t.Errorf("created push config %v, want %v with a sha256 fingerprint", hooks.GetPushConfig(), wantPush)
	}

	// The secret never shows: not in Get or List (gRPC or REST) of any
	// replica.
	for _, r := range replicas {
		g, err := r.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: "hooks"})
		if err != nil {
			t.Fatal(err)
		}
		list, err := r.Client.ListConsumerGroups(ctx, &pb.ListConsumerGroupsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		_, restGet := r.restCall(t, "GET", "/v1/groups/hooks", "")
		_, restList := r.restCall(t, "GET", "/v1/groups", "")
		for what, shown := range map[string]string{"Get": protojson.Format(g), "List": protojson.Format(list), "REST get": fmt.Sprint(restGet), "REST list": fmt.Sprint(restList)} {
			if strings.Contains(shown, pushKey) {
				t.Errorf("%s shows the push secret: %s", what, shown)
			}
			if !strings.Contains(shown, wantPush.SecretFingerprint) {
				t.Errorf("%s does not show the secret's fingerprint %s: %s", what, wantPush.SecretFingerprint, shown)
			}
		}
		if !proto.Equal(g.GetPushConfig(), wantPush) {
			t.Errorf("Get through a replica: push config %v, want %v", g.GetPushConfig(), wantPush)
		}
	}

	// Events due over about a second; the receiver is down from 0.5 s
	// to 2 s.
	w := s.watch(t, "")
	kinds := []string{"", "-fail1", "-slow1"}
	for i := range n {
		id := fmt.Sprintf("push-%02d%s", i, kinds[i%3])
		if _, err := replicas[i%len(replicas)].Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id, Ttl: ttl(200*time.Millisecond + time.Duration(i)*30*time.Millisecond),
			Metadata: map[string]string{"n": strconv.Itoa(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	rcv.down()
	downAt := time.Now()
	time.Sleep(1500 * time.Millisecond)
	rcv.up()
	upAt := time.Now()
	watched := map[string]*pb.ExpirationEvent{}
	for _, ev := range w.collect(t, n, 10*time.Second) {
		watched[ev.GetOrderId()] = ev
	}

	// On a timeout the checks below tell what went wrong.
	deadline := time.Now().Add(30 * time.Second)
	for rcv.acked("/ok") < n || pushDeadLetters(t, s, "doomed") < n {
		if time.Now().After(deadline) {
			t.Errorf("after 30s: %d of %d events acknowledged by the endpoint, %d of %d dead letters of the failing one",
				rcv.acked("/ok"), n, pushDeadLetters(t, s, "doomed"), n)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	rcv.mu.Lock()
	for _, b := range rcv.bad {
		t.Error(b)
	}
	for _, o := range rcv.overlaps {
		t.Error(o)
	}
	rcv.mu.Unlock()

	// Every event acknowledged once, by one 2xx answer; its attempts in
	// order (those made while the endpoint was down never reached it),
	// with one webhook-id and one body: the event as a group's consumer
	// gets it, without a cursor.
	ids := map[string]string{}
	var retried, failedDuringDown int
	for id, as := range rcv.byID("/ok") {
		order := as[0].event.GetOrderId()
		if other, ok := ids[order]; ok {
			t.Errorf("order %s came under two webhook-ids, %s and %s", order, other, id)
		}
		ids[order] = id
		want := proto.Clone(watched[order]).(*pb.ExpirationEvent)
		want.Cursor = ""
		if !proto.Equal(as[0].event, want) {
			t.Errorf("%s: pushed %v, but the watch saw %v", id, as[0].event, watched[order])
		}
		oks := 0
		for i, a := range as {
			if i > 0 && a.attempt <= as[i-1].attempt {
				t.Errorf("%s: attempt %d came after attempt %d", id, a.attempt, as[i-1].attempt)
			}
			if !proto.Equal(a.event, as[0].event) {
				t.Errorf("%s: attempt %d carried %v, the first %v", id, a.attempt, a.event, as[0].event)
			}
			if a.answered/100 == 2 {
				oks++
			}
		}
		if oks != 1 {
			t.Errorf("%s (%s): %d attempts answered 2xx, want exactly 1", id, order, oks)
		}
		if (strings.HasSuffix(order, "-fail1") || strings.HasSuffix(order, "-slow1")) && len(as) < 2 {
			t.Errorf("%s (%s): %d attempt(s); its first fails, so want a retry", id, order, len(as))
		}
		if len(as) > 1 {
			retried++
		}
		if ev := watched[order]; ev != nil && ev.GetExpiredAt().AsTime().After(downAt) && ev.GetExpiredAt().AsTime().Before(upAt.Add(-time.Second)) {
			failedDuringDown++
		}
	}
	if len(ids) != n {
		t.Errorf("the endpoint got %d events, want %d", len(ids), n)
	}
	if failedDuringDown == 0 {
		t.Errorf("no event expired while the endpoint was down: the test did not test the outage")
	}
	t.Logf("%d events acknowledged, %d of them after retries; %d expired while the endpoint was down", len(ids), retried, failedDuringDown)

	g, err := s.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: "hooks"})
	if err != nil {
		t.Fatal(err)
	}
	if g.GetBacklog() != 0 || g.GetInFlight() != 0 || g.GetDeadLetters() != 0 {
		t.Errorf("hooks after every event was acknowledged: backlog %d, in flight %d, dead letters %d; want none",
			g.GetBacklog(), g.GetInFlight(), g.GetDeadLetters())
	}

	// The failing endpoint: every event a dead letter after exactly 3
	// attempts, each signed and under one webhook-id.
	letters, err := s.Client.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{GroupId: "doomed", PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(letters.GetDeadLetters()) != n {
		t.Errorf("doomed has %d dead letters, want %d", len(letters.GetDeadLetters()), n)
	}
	for _, l := range letters.GetDeadLetters() {
		if l.GetDeliveryAttempts() != 3 {
			t.Errorf("dead letter %s: %d attempts, want 3", l.GetEvent().GetOrderId(), l.GetDeliveryAttempts())
		}
	}
	for id, as := range rcv.byID("/fail") {
		// An attempt made while the endpoint was down never reached it.
		if len(as) > 3 {
			t.Errorf("%s: the failing endpoint got %d attempts, more than max_deliveries 3", id, len(as))
		}
	}

	// The replicas counted the attempts: one acked per event in all.
	var acked, failed float64
	for _, r := range replicas {
		fams := r.scrape(t)
		a, _ := sampleValue(fams, "orderexpiry_push_deliveries_total", map[string]string{"group": "hooks", "outcome": "acked"})
		f, _ := sampleValue(fams, "orderexpiry_push_deliveries_total", map[string]string{"group": "doomed", "outcome": "failed"})
		acked, failed = acked+a, failed+f
	}
	if acked != n {
		t.Errorf("orderexpiry_push_deliveries_total{group=hooks,outcome=acked} sums to %g over the replicas, want %d", acked, n)
	}
	if failed == 0 || failed > 3*n {
		t.Errorf("orderexpiry_push_deliveries_total{group=doomed,outcome=failed} sums to %g, want 1 to %d", failed, 3*n)
	}
	for i, r := range replicas {
		if strings.Contains(r.Logs(), pushKey) {
			t.Errorf("replica %d logged the push secret", i)
		}
	}
}

// pushDeadLetters returns a group's count of dead letters.
func pushDeadLetters(t *testing.T, s *server, group string) int64 {
	t.Helper()
	g, err := s.Client.GetConsumerGroup(context.Background(), &pb.GetConsumerGroupRequest{GroupId: group})
	if err != nil {
		t.Fatal(err)
	}
	return g.GetDeadLetters()
}

// TestPushRefused: push settings a service does not allow, or that are out
// of range, are INVALID_ARGUMENT at creation with what to fix, and no group
// is created.
func TestPushRefused(t *testing.T) {
	ctx := context.Background()
	off := startServer(t, nil)
	strict := startServer(t, nil, "-push-allow-hosts=127.0.0.1,hooks.example.com")
	loose := startServer(t, nil, pushFlags...)
	ok := func(u string) *pb.PushConfig { return &pb.PushConfig{Url: u, Secret: pushSecret} }
	for _, tt := range []struct {
		name string
		s    *server
		push *pb.PushConfig
		ack  time.Duration
		says string
	}{
		{"push off", off, ok("https://hooks.example.com/"), 0, "push delivery is off on this service"},
		{"http", strict, ok("http://hooks.example.com/"), 0, "-push-allow-http"},
		{"loopback", strict, ok("https://127.0.0.1/"), 0, "-push-allow-private"},
		{"other host", strict, ok("https://hooks.example.org/"), 0, `host "hooks.example.org" is not in this service's allowed push hosts (127.0.0.1,hooks.example.com); use one of them, or add it there (-push-allow-hosts)`},
		{"no secret", loose, &pb.PushConfig{Url: "http://127.0.0.1/"}, 0, "push_config.secret is required"},
		{"fingerprint given", loose, &pb.PushConfig{Url: "http://127.0.0.1/", Secret: pushSecret, SecretFingerprint: "sha256:0"}, 0, "output only"},
		{"concurrency", loose, &pb.PushConfig{Url: "http://127.0.0.1/", Secret: pushSecret, MaxConcurrency: 101}, 0, "push_config.max_concurrency 101 is out of range"},
		{"timeout past half the ack deadline", loose, &pb.PushConfig{Url: "http://127.0.0.1/", Secret: pushSecret, Timeout: durationpb.New(600 * time.Millisecond)},
			time.Second, "push_config.timeout 600ms is out of range: give 10ms to half the ack_deadline (500ms)"},
	} {
		req := &pb.CreateConsumerGroupRequest{GroupId: "refused", PushConfig: tt.push}
		if tt.ack != 0 {
			req.AckDeadline = durationpb.New(tt.ack)
		}
		_, err := tt.s.Client.CreateConsumerGroup(ctx, req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.says) {
			t.Errorf("%s: %v; want InvalidArgument saying %q", tt.name, err, tt.says)
		}
		if _, err := tt.s.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: "refused"}); status.Code(err) != codes.NotFound {
			t.Errorf("%s: GetConsumerGroup after the refusal: %v, want NotFound", tt.name, err)
		}
	}
	// The defaults: 10 requests at once, a timeout of half a short ack
	// deadline.
	g, err := loose.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "defaults", AckDeadline: durationpb.New(time.Second), PushConfig: ok("http://127.0.0.1:1/")})
	if err != nil {
		t.Fatal(err)
	}
	if p := g.GetPushConfig(); p.GetMaxConcurrency() != 10 || p.GetTimeout().AsDuration() != 500*time.Millisecond || p.GetSecret() != "" {
		t.Errorf("push config with defaults: %v; want max_concurrency 10, timeout 500ms, no secret", p)
	}
	// The same settings again answer the group; another secret is
	// ALREADY_EXISTS, by fingerprint.
	if _, err := loose.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "defaults", AckDeadline: durationpb.New(time.Second), PushConfig: ok("http://127.0.0.1:1/")}); err != nil {
		t.Errorf("CreateConsumerGroup again with the same push settings: %v", err)
	}
	// A push group's events go to its endpoint: a consumer of its own,
	// streaming or pulling, is refused rather than let take some.
	if _, err := loose.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "defaults", Wait: durationpb.New(0)}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "push endpoint") {
		t.Errorf("PullExpirations of a push group: %v; want FailedPrecondition naming the push endpoint", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if st, err := loose.Client.ConsumeExpirations(cctx, &pb.ConsumeExpirationsRequest{GroupId: "defaults", Consumer: "c"}); err != nil {
		t.Errorf("ConsumeExpirations: %v", err)
	} else if _, err := st.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("ConsumeExpirations of a push group: %v; want FailedPrecondition", err)
	}
	other := "whsec_" + strings.Repeat("A", 32)
	_, err = loose.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "defaults", AckDeadline: durationpb.New(time.Second),
		PushConfig: &pb.PushConfig{Url: "http://127.0.0.1:1/", Secret: other}})
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(status.Convert(err).Message(), "push secret sha256:") || strings.Contains(err.Error(), pushKey) {
		t.Errorf("CreateConsumerGroup with another secret: %v; want AlreadyExists naming the fingerprints only", err)
	}
}
