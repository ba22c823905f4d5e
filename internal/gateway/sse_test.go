package gateway

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// getSSE opens the watch as an EventSource does, with the extra headers.
func getSSE(t *testing.T, url string, header map[string]string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// readBlocks sends the blocks of an event stream (its lines up to a blank
// line, joined by "\n") until the body ends, or ctx is done, then closes
// the channel.
func readBlocks(ctx context.Context, body io.Reader) <-chan string {
	blocks := make(chan string)
	go func() {
		defer close(blocks)
		sc := bufio.NewScanner(body)
		var lines []string
		for sc.Scan() {
			if sc.Text() != "" {
				lines = append(lines, sc.Text())
				continue
			}
			select {
			case blocks <- strings.Join(lines, "\n"):
			case <-ctx.Done():
				return
			}
			lines = nil
		}
	}()
	return blocks
}

// sseBlocks reads an event stream to its end.
func sseBlocks(t *testing.T, body io.Reader) []string {
	t.Helper()
	var blocks []string
	for b := range readBlocks(context.Background(), body) {
		blocks = append(blocks, b)
	}
	return blocks
}

// checkSSEEvent checks an event block: the cursor as its id, the event's
// NDJSON line as its data, and no event type.
func checkSSEEvent(t *testing.T, block string, want *pb.ExpirationEvent) {
	t.Helper()
	id, data, ok := strings.Cut(block, "\n")
	if !ok || id != "id: "+want.GetCursor() || !strings.HasPrefix(data, "data: ") || strings.Contains(data, "\n") {
		t.Fatalf("event block %q, want id: %s and one data line", block, want.GetCursor())
	}
	checkEventLine(t, strings.TrimPrefix(data, "data: "), want)
}

func TestSSEStream(t *testing.T) {
	tests := []struct {
		name     string
		events   int
		end      error
		wantLast string // the last block; empty: none after the events
	}{
		{name: "two events then unavailable", events: 2,
			end:      status.Error(codes.Unavailable, "the server is shutting down; resume with after_cursor=1795240202144-1"),
			wantLast: `event: watch-error` + "\n" + `data: {"code":14,"status":"UNAVAILABLE","message":"the server is shutting down; resume with after_cursor=1795240202144-1"}`},
		{name: "lagged", events: 1,
			end:      status.Error(codes.ResourceExhausted, "this watcher fell too far behind; resume with after_cursor=1795240202144-0"),
			wantLast: `event: watch-error` + "\n" + `data: {"code":8,"status":"RESOURCE_EXHAUSTED","message":"this watcher fell too far behind; resume with after_cursor=1795240202144-0"}`},
		{name: "a message with line breaks stays one data line", events: 0,
			end:      status.Error(codes.Internal, "one\ntwo\r\nthree"),
			wantLast: `event: watch-error` + "\n" + `data: {"code":13,"status":"INTERNAL","message":"one\ntwo\r\nthree"}`},
		{name: "ends cleanly", events: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeServer{watch: func(_ *pb.WatchExpirationsRequest, stream grpc.ServerStreamingServer[pb.ExpirationEvent]) error {
				if err := stream.SendHeader(metadata.MD{}); err != nil {
					return err
				}
				for i := range tt.events {
					if err := stream.Send(testEvent(i)); err != nil {
						return err
					}
				}
				return tt.end
			}}
			g := startGateway(t, fake, nil)
			resp := getSSE(t, g.url("/v1/expirations:watch"), nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s %q, want %q", k, got, want)
				}
			}
			blocks := sseBlocks(t, resp.Body)
			want := 1 + tt.events
			if tt.wantLast != "" {
				want++
			}
			if len(blocks) != want {
				t.Fatalf("got %d blocks %q, want %d", len(blocks), blocks, want)
			}
			if blocks[0] != "retry: 1000" {
				t.Errorf("first block %q, want retry: 1000", blocks[0])
			}
			for i := range tt.events {
				checkSSEEvent(t, blocks[1+i], testEvent(i))
			}
			if tt.wantLast != "" && blocks[len(blocks)-1] != tt.wantLast {
				t.Errorf("last block\n%s\nwant\n%s", blocks[len(blocks)-1], tt.wantLast)
			}
		})
	}
}

// TestSSEAccept: the event stream is chosen by text/event-stream anywhere
// in the Accept list; anything else keeps NDJSON.
func TestSSEAccept(t *testing.T) {
	tests := []struct {
		accept []string
		want   string
	}{
		{[]string{"text/event-stream"}, "text/event-stream"},
		{[]string{"application/json, text/event-stream;q=0.9"}, "text/event-stream"},
		{[]string{"application/json", "Text/Event-Stream"}, "text/event-stream"},
		{[]string{"text/event-stream; q=0"}, "application/x-ndjson"},
		{[]string{"*/*"}, "application/x-ndjson"},
		{[]string{"text/*"}, "application/x-ndjson"},
		{nil, "application/x-ndjson"},
	}
	fake := &fakeServer{watch: func(_ *pb.WatchExpirationsRequest, stream grpc.ServerStreamingServer[pb.ExpirationEvent]) error {
		return stream.SendHeader(metadata.MD{})
	}}
	g := startGateway(t, fake, nil)
	for _, tt := range tests {
		req, err := http.NewRequest(http.MethodGet, g.url("/v1/expirations:watch"), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header["Accept"] = tt.accept
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("Content-Type"); got != tt.want {
			t.Errorf("Accept %q: Content-Type %q, want %q", tt.accept, got, tt.want)
		}
		if wantBody := map[string]string{"text/event-stream": "retry: 1000\n\n"}[tt.want]; string(body) != wantBody {
			t.Errorf("Accept %q: body %q, want %q", tt.accept, body, wantBody)
		}
	}
}

// TestSSELastEventID: the header an EventSource sends when it reconnects
// sets the cursor, over after_cursor; a bad one is refused before the
// server is called; an NDJSON watch ignores it.
func TestSSELastEventID(t *testing.T) {
	tests := []struct {
		name       string
		query      string
		header     map[string]string
		wantCursor string
		wantBad    bool
	}{
		{name: "resumes after it", header: map[string]string{"Last-Event-ID": "1795240202144-3"}, wantCursor: "1795240202144-3"},
		{name: "wins over after_cursor", query: "?after_cursor=1795240202144-0", header: map[string]string{"Last-Event-ID": "1795240202144-7"}, wantCursor: "1795240202144-7"},
		{name: "empty is none", query: "?after_cursor=1795240202144-0", header: map[string]string{"Last-Event-ID": ""}, wantCursor: "1795240202144-0"},
		{name: "not a cursor", header: map[string]string{"Last-Event-ID": "ord-7"}, wantBad: true},
		{name: "not a cursor, with a good after_cursor", query: "?after_cursor=1795240202144-0", header: map[string]string{"Last-Event-ID": "1-2-3"}, wantBad: true},
		{name: "ignored by NDJSON", query: "?after_cursor=1795240202144-0", header: map[string]string{"Accept": "application/json", "Last-Event-ID": "junk"}, wantCursor: "1795240202144-0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeServer{watch: func(_ *pb.WatchExpirationsRequest, stream grpc.ServerStreamingServer[pb.ExpirationEvent]) error {
				return stream.SendHeader(metadata.MD{})
			}}
			g := startGateway(t, fake, nil)
			resp := getSSE(t, g.url("/v1/expirations:watch"+tt.query), tt.header)
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			reqs := fake.recorded()
			if tt.wantBad {
				checkError(t, resp, body, http.StatusBadRequest, codes.InvalidArgument, "Last-Event-ID", tt.header["Last-Event-ID"], "not a cursor")
				if len(reqs) != 0 {
					t.Errorf("the server was called with %v", reqs)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || len(reqs) != 1 {
				t.Fatalf("status %d, %d requests to the server; want 200 and 1", resp.StatusCode, len(reqs))
			}
			if got := reqs[0].(*pb.WatchExpirationsRequest).GetAfterCursor(); got != tt.wantCursor {
				t.Errorf("the server saw after_cursor %q, want %q", got, tt.wantCursor)
			}
		})
	}
}

// TestSSEHeartbeat: a comment goes out after each quiet interval, none
// while events flow, and the stream still ends when the client goes away.
func TestSSEHeartbeat(t *testing.T) {
	defer func(d time.Duration) { sseHeartbeat = d }(sseHeartbeat)
	sseHeartbeat = 100 * time.Millisecond

	ended := make(chan error, 1)
	fake := &fakeServer{watch: func(_ *pb.WatchExpirationsRequest, stream grpc.ServerStreamingServer[pb.ExpirationEvent]) error {
		if err := stream.SendHeader(metadata.MD{}); err != nil {
			return err
		}
		time.Sleep(350 * time.Millisecond) // quiet: about three heartbeats
		for i := range 8 {                 // busy: an event every 10 ms, no heartbeat
			if err := stream.Send(testEvent(i)); err != nil {
				return err
			}
			time.Sleep(10 * time.Millisecond)
		}
		<-stream.Context().Done() // quiet again until the client goes away
		ended <- stream.Context().Err()
		return nil
	}}
	g := startGateway(t, fake, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url("/v1/expirations:watch"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	blocks := readBlocks(ctx, resp.Body)
	var got []string // "retry", "beat" or "event"
	for len(got) == 0 || got[len(got)-1] != "beat" || countOf(got, "event") < 8 {
		select {
		case b, ok := <-blocks:
			if !ok {
				t.Fatalf("the stream ended after %q", got)
			}
			switch {
			case b == "retry: 1000":
				got = append(got, "retry")
			case b == ": heartbeat":
				got = append(got, "beat")
			case strings.HasPrefix(b, "id: "):
				checkSSEEvent(t, b, testEvent(countOf(got, "event")))
				got = append(got, "event")
			default:
				t.Fatalf("unexpected block %q after %q", b, got)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("nothing for 5s after %q", got)
		}
	}
	// retry, beats while quiet, the 8 events with no beat among them, a beat.
	s := strings.Join(got, " ")
	if !strings.HasPrefix(s, "retry beat beat") || !strings.HasSuffix(s, strings.Repeat(" event", 8)+" beat") {
		t.Errorf("blocks %s; want retry, heartbeats, 8 events together, a heartbeat", s)
	}
	cancel()
	select {
	case err := <-ended:
		if err != context.Canceled {
			t.Errorf("the server's stream ended with %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the gRPC stream did not end when the client went away")
	}
}

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}
