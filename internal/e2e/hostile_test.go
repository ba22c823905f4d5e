package e2e

// Hostile clients: each test replays one finding of a probe of the service
// as an attacker would, through the real ports, and checks that the server
// answers with the right code and keeps its memory, descriptors and
// goroutines bounded. Tests about resources log a RESULT line with the
// figures, for docs/reliability.md.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestHostileDotIDs: the order ids "." and "..", which URL clients
// normalise away as path segments, are refused on both ports and never
// written; ids that merely contain dots are still fine.
func TestHostileDotIDs(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	ctx := context.Background()
	for _, id := range []string{".", ".."} {
		t.Run(id, func(t *testing.T) {
			_, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id})
			wantCode(t, err, codes.InvalidArgument)
			if msg := status.Convert(err).Message(); !strings.Contains(msg, "order_id") || !strings.Contains(msg, `"`+id+`"`) {
				t.Fatalf("message %q does not name order_id and %q", msg, id)
			}
			_, err = s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: id})
			wantCode(t, err, codes.InvalidArgument)
			code, _, body := httpCall(t, s.HTTP, "POST", s.URL("/v1/orders"), "", `{"orderId":"`+id+`","ttl":"60s"}`)
			if e := jsonError(body); code != 400 || e.Code != int(codes.InvalidArgument) || !strings.Contains(e.Message, "order_id") {
				t.Fatalf("REST checkout of %q: %d %s, want 400 naming order_id", id, code, body)
			}
			// Escaped, the segment reaches the server as the id itself.
			code, _, body = httpCall(t, s.HTTP, "GET", s.URL("/v1/orders/"+strings.ReplaceAll(id, ".", "%2E")), "", "")
			if e := jsonError(body); code != 400 || e.Code != int(codes.InvalidArgument) {
				t.Fatalf("REST get of %q: %d %s, want 400", id, code, body)
			}
		})
	}
	for _, id := range []string{"...", ".a", "a.", "a..b", "v1.2"} {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id}); err != nil {
			t.Errorf("checkout of %q: %v", id, err)
		}
	}
}

// TestHostileCursorPartsClipped: a cursor with the wrong number of parts
// (here 1,024 parts of the longest cursor, 43 KB, against a log of one
// partition) is refused with a short message that does not repeat it.
func TestHostileCursorPartsClipped(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	part := "18446744073709551615-18446744073709551615"
	parts := make([]string, 1024)
	for i := range parts {
		parts[i] = part
	}
	cursor := strings.Join(parts, ",")
	const maxMessage = 512

	stream, err := s.Client.WatchExpirations(context.Background(), &pb.WatchExpirationsRequest{AfterCursor: cursor})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.InvalidArgument)
	msg := status.Convert(err).Message()
	if len(msg) > maxMessage || !strings.Contains(msg, "1024 part(s)") || !strings.Contains(msg, "1 partition(s)") {
		t.Fatalf("gRPC: a message of %d bytes (%.200q…); want at most %d naming 1024 parts and 1 partition", len(msg), msg, maxMessage)
	}

	code, _, body := httpCall(t, s.HTTP, "GET", s.URL("/v1/expirations:watch?after_cursor="+url.QueryEscape(cursor)), "", "")
	// The body holds the message twice (the BadRequest detail describes
	// the field with it) and the details' names: still short.
	if e := jsonError(body); code != 400 || e.Code != int(codes.InvalidArgument) || len(e.Message) > maxMessage || len(body) > 2*maxMessage+512 {
		t.Fatalf("REST: %d and a body of %d bytes (%.200q…); want 400 and a short message", code, len(body), body)
	}
	code, _, sse := s.sseReject(t, cursor)
	if m, _ := sse["message"].(string); code != 400 || len(m) > maxMessage {
		t.Fatalf("REST with Last-Event-ID: %d and a message of %d bytes; want 400 and a short message", code, len(m))
	}
}

// TestHostileBearerExact: an authorization header is "Bearer", one space
// and the token (the scheme in any case), with nothing around them; two
// spaces, a tab, a space at either end or a second word are refused on the
// gRPC port and through the gateway.
func TestHostileBearerExact(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, serverOptions{Token: tokenA}, map[string]string{"AUTH_TOKENS": tokenA})
	bare := pb.NewOrderServiceClient(dialServer(t, s.GRPCAddr, nil, ""))
	tests := []struct {
		name, header string
		ok           bool
		grpc, rest   bool // sent on the gRPC port, through the gateway
	}{
		{"one space", "Bearer " + tokenA, true, true, true},
		{"scheme in another case", "bEARER " + tokenA, true, true, true},
		{"two spaces", "Bearer  " + tokenA, false, true, true},
		{"a second word", "Bearer " + tokenA + " " + tokenA, false, true, true},
		{"token and a comma", "Bearer " + tokenA + ",", false, true, true},
		// gRPC clients refuse to send a tab in metadata.
		{"tab", "Bearer\t" + tokenA, false, false, true},
		// HTTP drops the white space around a header's value before the
		// service sees it (RFC 9110, section 5.5), so these go over gRPC.
		{"trailing space", "Bearer " + tokenA + " ", false, true, false},
		{"leading space", " Bearer " + tokenA, false, true, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprint("bearer-", i)
			if tc.grpc {
				ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", tc.header)
				_, err := bare.Checkout(ctx, &pb.CheckoutRequest{OrderId: id})
				if tc.ok && err != nil {
					t.Fatalf("gRPC with %q: %v", tc.header, err)
				}
				if !tc.ok {
					wantCode(t, err, codes.Unauthenticated)
					if strings.Contains(status.Convert(err).Message(), tokenA) {
						t.Fatalf("the refusal echoes the token: %v", err)
					}
				}
			}
			if !tc.rest {
				return
			}
			code, h, body := httpCall(t, s.HTTP, "POST", s.URL("/v1/orders"), tc.header, `{"orderId":"`+id+`-rest"}`)
			if tc.ok {
				if code != 200 {
					t.Fatalf("REST with %q: %d %s", tc.header, code, body)
				}
				return
			}
			want401(t, code, h, body, []string{tokenA})
		})
	}
}

// rawCodec sends and receives messages as the bytes they are, so that a
// test can send what no protobuf library would encode.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }

func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// TestHostileMalformedProtobuf: a request that is not a valid protobuf
// message (invalid UTF-8 in a string, truncated, nested past the decoder's
// limit) gets INVALID_ARGUMENT saying so, after authentication (a call
// without a token gets UNAUTHENTICATED, as any other), and is not logged as
// an internal error.
func TestHostileMalformedProtobuf(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, serverOptions{Token: tokenA}, map[string]string{"AUTH_TOKENS": tokenA})
	withToken := dialServer(t, s.GRPCAddr, nil, tokenA)
	noToken := dialServer(t, s.GRPCAddr, nil, "")

	str := func(num protowire.Number, v string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), v)
	}
	// Unknown groups nested deeper than the decoder's recursion limit
	// (10,000), each opened and closed.
	var deep []byte
	for range 10_050 {
		deep = protowire.AppendTag(deep, 15, protowire.StartGroupType)
	}
	for range 10_050 {
		deep = protowire.AppendTag(deep, 15, protowire.EndGroupType)
	}
	tests := []struct {
		name   string
		method string
		msg    []byte
		stream bool
	}{
		{"invalid UTF-8 in order_id", "GetOrder", str(1, "ord-\xff\xfe"), false},
		{"truncated field", "CompleteOrder", str(1, "ord-1")[:4], false},
		{"length past the end", "CancelOrder", []byte{0x0a, 0x7f, 'a'}, false},
		{"deep nesting", "Checkout", append(str(1, "ord-deep"), deep...), false},
		{"invalid UTF-8 in a metadata value", "Checkout", append(str(1, "ord-md"), protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), append(str(1, "k"), str(2, "\xc3")...))...), false},
		{"invalid UTF-8 in after_cursor", "WatchExpirations", str(1, "1-\xff"), true},
		{"truncated watch request", "WatchExpirations", []byte{0x0a, 0x05, '1'}, true},
	}
	call := rawCall
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := call(withToken, tc.method, tc.msg, tc.stream)
			wantCode(t, err, codes.InvalidArgument)
			if msg := status.Convert(err).Message(); !strings.Contains(msg, "is not a valid orderexpiry.v1.") {
				t.Fatalf("message %q does not say the request is not a valid message", msg)
			}
			wantCode(t, call(noToken, tc.method, tc.msg, tc.stream), codes.Unauthenticated)
		})
	}
	for _, id := range []string{"ord-deep", "ord-md"} {
		_, err := s.Client.GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: id})
		wantCode(t, err, codes.NotFound)
	}
	// Well-formed calls still work, with unknown fields ignored as
	// protobuf wants.
	withUnknown := append(str(1, "ord-ok"), str(99, "from a newer client")...)
	if err := call(withToken, "Checkout", withUnknown, false); err != nil {
		t.Fatalf("a checkout with an unknown field: %v", err)
	}
	if logs := s.Logs(); strings.Contains(logs, "internal error") {
		t.Fatalf("a malformed request was logged as an internal error:\n%s", logs)
	}
}

// TestHostileEncodedColon: an encoded colon (%3A) is part of the path
// segment it is in, never the separator of a custom verb: an order id with
// one is refused with 400 whatever the method, so
// "POST /v1/orders/ok-1%3Acomplete" completes nothing, just as
// "GET /v1/orders/ok-1%3Acomplete" finds nothing. A plain colon still
// introduces the verb.
func TestHostileEncodedColon(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, id := range []string{"ok-1", "ok-2"} {
		if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"`+id+`","ttl":"60s"}`); code != 200 {
			t.Fatalf("checkout %s: %d %v", id, code, body)
		}
	}
	for _, tc := range []struct{ method, path string }{
		{"POST", "/v1/orders/ok-1%3Acomplete"},
		{"POST", "/v1/orders/ok-1%3acomplete"},
		{"POST", "/v1/orders/ok-1%3Acancel"},
		{"POST", "/v1/orders/ok-1%3Acomplete:complete"},
		{"GET", "/v1/orders/ok-1%3Acomplete"},
		{"GET", "/v1/orders/ok-1%3A"},
		{"DELETE", "/v1/orders/ok-1%3Acancel"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			code, _, body := httpCall(t, s.HTTP, tc.method, s.URL(tc.path), "", "")
			if e := jsonError(body); code != 400 || e.Code != int(codes.InvalidArgument) || !strings.Contains(e.Message, "order_id has the character ':'") {
				t.Fatalf("%d %s, want 400 for the ':' in the order id", code, body)
			}
		})
	}
	if code, body := s.restCall(t, "GET", "/v1/orders/ok-1", ""); code != 200 || body["status"] != "ORDER_STATUS_PENDING" {
		t.Fatalf("ok-1 after the refused calls: %d %v, want it still pending", code, body)
	}
	if code, body := s.restCall(t, "POST", "/v1/orders/ok-2:complete", ""); code != 200 || body["status"] != "ORDER_STATUS_COMPLETED" {
		t.Fatalf("POST /v1/orders/ok-2:complete: %d %v, want it completed", code, body)
	}
}

// TestHostileLongURI: a request URI longer than -max-request-bytes gets
// 414 URI Too Long, once the caller is authenticated: without a token it
// gets 401 like any other call.
func TestHostileLongURI(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, serverOptions{Token: tokenA}, map[string]string{"AUTH_TOKENS": tokenA})
	long := strings.Repeat("x", 70_000)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/orders/" + long},
		{"POST", "/v1/orders/" + long + ":complete"},
		{"GET", "/v1/expirations:watch?after_cursor=" + long},
	} {
		t.Run(tc.method+" "+tc.path[:20], func(t *testing.T) {
			code, h, body := httpCall(t, s.HTTP, tc.method, s.URL(tc.path), "", "")
			want401(t, code, h, body, nil)
			code, _, body = httpCall(t, s.HTTP, tc.method, s.URL(tc.path), "Bearer "+tokenA, "")
			if e := jsonError(body); code != http.StatusRequestURITooLong || e.Code != int(codes.InvalidArgument) || !strings.Contains(e.Message, "65536") {
				t.Fatalf("with the token: %d %.300s, want 414 naming the limit", code, body)
			}
		})
	}
	// A long id within the limit is refused for its length, as before.
	code, _, body := httpCall(t, s.HTTP, "GET", s.URL("/v1/orders/"+long[:1000]), "Bearer "+tokenA, "")
	if e := jsonError(body); code != 400 || !strings.Contains(e.Message, "order_id is 1000 bytes long") {
		t.Fatalf("a 1000-byte id: %d %s", code, body)
	}
}

// TestHostileLiveWatchRedisDown: while Redis is down, a watch without a
// cursor is refused with UNAVAILABLE (503), as a watch with one is and as
// /healthz says, instead of being accepted and left silent; once Redis is
// back, live watches are accepted and get events again.
func TestHostileLiveWatchRedisDown(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis killed and restarted: skipped with -short")
	}
	t.Parallel()
	r := redistest.Start(t, "--appendonly", "yes")
	s := startServer(t, map[string]string{"REDIS_URL": r.URL()})
	if err := tryWatch(s, 300*time.Millisecond); err != nil {
		t.Fatalf("a live watch with Redis up: %v", err)
	}
	r.Kill()
	waitHealth(t, s, healthpb.HealthCheckResponse_NOT_SERVING, 5*time.Second)

	start := time.Now()
	err := tryWatch(s, 3*time.Second)
	wantCode(t, err, codes.Unavailable)
	took := time.Since(start)
	code, _, body, lines := openNDJSON(t, s.HTTP, s.URL("/v1/expirations:watch"), "")
	if lines != nil {
		lines.cancel()
	}
	if e := jsonError(body); code != 503 || e.Code != int(codes.Unavailable) {
		t.Fatalf("REST live watch with Redis down: %d %s, want 503", code, body)
	}
	code, _, body, lines = openNDJSON(t, s.HTTP, s.URL("/v1/expirations:watch?after_cursor=0-0"), "")
	if lines != nil {
		lines.cancel()
	}
	if code != 503 {
		t.Fatalf("REST watch with a cursor with Redis down: %d %s, want 503", code, body)
	}

	r.Restart(t)
	waitHealth(t, s, healthpb.HealthCheckResponse_SERVING, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := tryWatch(s, 300*time.Millisecond)
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("a live watch after Redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	w := s.watch(t, "")
	if _, err := s.Client.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: "down-back", Ttl: ttl(100 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if ev := w.next(t, 5*time.Second); ev.GetOrderId() != "down-back" {
		t.Fatalf("event %v", ev)
	}
	result(t, "live_watch_refused_after=%s", took.Round(time.Millisecond))
}

// rawCall calls a method of the service with msg as the request's bytes,
// as they are; for a server stream, it returns the error of the first
// message.
func rawCall(conn *grpc.ClientConn, method string, msg []byte, stream bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	full := "/orderexpiry.v1.OrderService/" + method
	if !stream {
		var out []byte
		return conn.Invoke(ctx, full, msg, &out, grpc.ForceCodec(rawCodec{}))
	}
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, full, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	if err := cs.SendMsg(msg); err != nil {
		return err
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	var out []byte
	return cs.RecvMsg(&out)
}

// procStatus returns a field of the server process's /proc status in kB
// (VmRSS, VmHWM).
func (s *server) procStatus(t *testing.T, field string) int {
	t.Helper()
	s.needProcess(t, "procStatus")
	n, err := s.proc.Status(field)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// gauge reads one unlabelled gauge from /metrics.
func (s *server) gauge(t *testing.T, name string) int {
	t.Helper()
	v, err := sampleValue(s.scrape(t), name, nil)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return int(v)
}

// TestHostileReplayWatchers: -max-watchers holds while watches replay: of
// 100 watches from "0-0" that do not read, against a limit of 20, exactly
// 20 are accepted and the other 80 refused at once with
// RESOURCE_EXHAUSTED, instead of all 100 replaying. Memory stays bounded,
// and the slots come back when the watches go.
func TestHostileReplayWatchers(t *testing.T) {
	t.Parallel()
	const limit, watches, events = 20, 100, 1000
	s := startProcess(t, nil, "-max-watchers", strconv.Itoa(limit), "-debug-addr", "127.0.0.1:0")
	ctx := context.Background()

	// A log of 1,000 events of about 1.1 KB.
	md := map[string]string{"note": strings.Repeat("n", 1000)}
	for i := range events {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("rp-", i), Ttl: ttl(time.Millisecond), Metadata: md}); err != nil {
			t.Fatal(err)
		}
	}
	reader := s.watch(t, "0-0")
	reader.collect(t, events, 20*time.Second)
	reader.cancel()
	waitGauge(t, s, "orderexpiry_watchers", 0)
	rssBefore, goroutinesBefore, heapBefore := s.procStatus(t, "VmRSS"), s.gauge(t, "go_goroutines"), s.heapInuse(t)

	// Fixed, small flow-control windows: a watch that does not read stops
	// the server's sends after about 128 KiB, in the middle of its replay.
	conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(16<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewOrderServiceClient(conn)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		accepted int
		refused  = map[codes.Code]int{}
		message  string
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range watches {
		wg.Go(func() {
			stream, err := client.WatchExpirations(wctx, &pb.WatchExpirationsRequest{AfterCursor: "0-0"})
			if err == nil {
				// A watch refused before it started has no header; Recv
				// then gives its status at once.
				var md metadata.MD
				if md, err = stream.Header(); err == nil && md == nil {
					_, err = stream.Recv()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				accepted++
				return
			}
			refused[status.Code(err)]++
			message = status.Convert(err).Message()
		})
	}
	wg.Wait()
	took := time.Since(start)
	if accepted != limit || refused[codes.ResourceExhausted] != watches-limit {
		t.Errorf("of %d watches from 0-0 with -max-watchers %d: %d accepted, refused %v; want %d accepted and the rest RESOURCE_EXHAUSTED",
			watches, limit, accepted, refused, limit)
	}
	if refused[codes.ResourceExhausted] > 0 && !strings.Contains(message, "max-watchers") {
		t.Errorf("refused with %q, which does not name the limit", message)
	}
	// The replaying watches count as open ones.
	if n := s.gauge(t, "orderexpiry_watchers"); n != min(accepted, limit) {
		t.Errorf("orderexpiry_watchers = %d while %d watches replay", n, accepted)
	}
	time.Sleep(500 * time.Millisecond) // let the replays fill what they can
	rssDuring, goroutinesDuring, heapDuring := s.procStatus(t, "VmRSS"), s.gauge(t, "go_goroutines"), s.heapInuse(t)
	hwm := s.procStatus(t, "VmHWM")

	// Gone, they give their slots back: a new watch replays everything.
	cancel()
	waitGauge(t, s, "orderexpiry_watchers", 0)
	again := s.watch(t, "0-0")
	again.collect(t, events, 20*time.Second)
	again.cancel()
	result(t, "limit=%d watches=%d accepted=%d refused=%v in=%s heap_inuse_before=%d during=%d rss_kb_before=%d during=%d peak=%d goroutines_before=%d during=%d",
		limit, watches, accepted, refused, took.Round(time.Millisecond), heapBefore, heapDuring, rssBefore, rssDuring, hwm, goroutinesBefore, goroutinesDuring)
}

// waitGauge waits up to 10 s for a gauge of /metrics to show want.
func waitGauge(t *testing.T, s *server, name string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.gauge(t, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d after 10s, want %d", name, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stalledConn is a REST watch on a raw connection with a small receive
// buffer, which reads its response's headers and then nothing more.
type stalledConn struct{ net.Conn }

func openStalled(t *testing.T, addr string) stalledConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "GET /v1/expirations:watch HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	status, err := bufio.NewReaderSize(c, 16).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("stalled watch: %q, %v", status, err)
	}
	return stalledConn{c}
}

// closedByServer says whether the server has closed the connection: reads
// drain what was in flight and then end.
func (c stalledConn) closedByServer(d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// TestHostileStalledRESTWatcher: the connections of REST watchers that stop
// reading are closed once a write has waited for the gateway's write
// deadline (10 s by default), and their watches end: the server's
// descriptors and goroutines come back to where they were, instead of
// staying until the clients leave.
func TestHostileStalledRESTWatcher(t *testing.T) {
	if testing.Short() {
		t.Skip("20 stalled watchers held past the write deadline: skipped with -short")
	}
	t.Parallel()
	const stalled = 20
	s := startProcess(t, nil, "-watch-buffer", "64", "-debug-addr", "127.0.0.1:0")
	ctx := context.Background()
	// Warm up: the gateway's connection to the gRPC server, whose
	// goroutines stay, and this test's gRPC connection, dialled at its
	// first call, whose goroutines on the server stay too.
	s.restWatch(t, "").cancel()
	if _, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "sr-none"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetOrder of no order: %v", err)
	}
	waitGauge(t, s, "orderexpiry_watchers", 0)
	fdsBefore, goroutinesBefore, rssBefore, heapBefore := openDescriptors(t, s.PID()), s.gauge(t, "go_goroutines"), s.procStatus(t, "VmRSS"), s.heapInuse(t)

	conns := make([]stalledConn, stalled)
	ports := make([]int, stalled)
	for i := range conns {
		conns[i] = openStalled(t, s.HTTPAddr)
		ports[i] = conns[i].LocalAddr().(*net.TCPAddr).Port
	}
	waitGauge(t, s, "orderexpiry_watchers", stalled)
	// 600 events of about 6 KB: 3.6 MB for each watcher, far more than
	// the sockets' buffers hold and than -watch-buffer.
	md := map[string]string{}
	for i := range 6 {
		md[fmt.Sprint("k", i)] = strings.Repeat("v", 1000)
	}
	for i := range 600 {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("sr-", i), Ttl: ttl(time.Millisecond), Metadata: md}); err != nil {
			t.Fatal(err)
		}
	}
	produced := time.Now()
	time.Sleep(time.Second) // let the sends fill what they can
	fdsStalled, goroutinesStalled, rssStalled, heapStalled := openDescriptors(t, s.PID()), s.gauge(t, "go_goroutines"), s.procStatus(t, "VmRSS"), s.heapInuse(t)
	if n := fdsStalled.from(ports); n != stalled {
		t.Fatalf("the server holds %d connections of the %d stalled watchers", n, stalled)
	}

	// Within the write deadline and a margin, the server lets them go: it
	// holds none of their connections, and no more descriptors of its own
	// (files, pipes, listeners, connections it dialled) than before. The
	// test's own connections (gRPC, /metrics, /debug) are not counted:
	// their pools may hold one more than before on a busy machine. Nor
	// their goroutines: the margin of 5 is for those.
	deadline := produced.Add(25 * time.Second)
	var fdsAfter descriptors
	var goroutinesAfter int
	for {
		fdsAfter, goroutinesAfter = openDescriptors(t, s.PID()), s.gauge(t, "go_goroutines")
		if fdsAfter.from(ports) == 0 && fdsAfter.own() <= fdsBefore.own() && goroutinesAfter <= goroutinesBefore+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("25 s after %d REST watchers stopped reading: %d of their connections held, %d descriptors besides accepted connections (%d before), %d goroutines (%d before), heap in use %d (%d before, %d once stalled)",
				stalled, fdsAfter.from(ports), fdsAfter.own(), fdsBefore.own(), goroutinesAfter, goroutinesBefore, s.heapInuse(t), heapBefore, heapStalled)
		}
		time.Sleep(100 * time.Millisecond)
	}
	released := time.Since(produced)
	heapAfter := s.heapInuse(t)
	waitGauge(t, s, "orderexpiry_watchers", 0)
	closed := 0
	for _, c := range conns {
		if c.closedByServer(5 * time.Second) {
			closed++
		}
	}
	if closed != stalled {
		t.Errorf("%d of %d stalled connections were closed by the server", closed, stalled)
	}
	// The service is fine: a new watch gets the next event.
	w := s.restWatch(t, "")
	if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "sr-after", Ttl: ttl(50 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if l := w.next(t); l["orderId"] != "sr-after" {
		t.Fatalf("line %v", l)
	}
	result(t, "stalled=%d own_fds_before=%d stalled=%d after=%d goroutines_before=%d stalled=%d after=%d heap_inuse_before=%d stalled=%d after=%d rss_kb_before=%d stalled=%d peak=%d released_after=%s",
		stalled, fdsBefore.own(), fdsStalled.own(), fdsAfter.own(), goroutinesBefore, goroutinesStalled, goroutinesAfter, heapBefore, heapStalled, heapAfter,
		rssBefore, rssStalled, s.procStatus(t, "VmHWM"), released.Round(100*time.Millisecond))
}
