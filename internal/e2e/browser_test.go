package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestBrowserEventSource opens an EventSource on the watch in headless
// Chromium, sees expirations arrive, drops its connection while more
// orders expire, and sees the browser reconnect by itself with
// Last-Event-ID and receive every expiration exactly once, in order.
func TestBrowserEventSource(t *testing.T) {
	chromium := chromiumPath(t)
	s := startServer(t, nil)
	ctx := context.Background()
	truth := s.watch(t, "") // every expiration, in log order, over gRPC
	p := newBrowserPage(t, s)
	startChromium(t, chromium, p.srv.URL+"/")
	p.waitFor(t, 60*time.Second, "the page's EventSource to open", func() bool { return len(p.of("open")) == 1 })

	checkout := func(prefix string, n int) {
		t.Helper()
		for i := range n {
			id := fmt.Sprint(prefix, i)
			if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id, Ttl: ttl(time.Duration(100+20*i) * time.Millisecond)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	messages := func(n int) func() bool { return func() bool { return len(p.of("message")) >= n } }

	checkout("live-", 5)
	want := truth.collect(t, 5, 10*time.Second)
	p.waitFor(t, 10*time.Second, "5 expirations in the page", messages(5))
	lastCursor := want[4].GetCursor()

	// Drop: every connection to the browser is closed, and the watch it
	// opens again is held at the proxy until more orders have expired.
	p.hold()
	p.drop()
	p.waitFor(t, 10*time.Second, "the browser to reconnect", func() bool { return len(p.watchRequests()) == 2 })
	if got := p.watchRequests()[1]; got != lastCursor {
		t.Fatalf("the browser reconnected with Last-Event-ID %q, want the last cursor it received, %q", got, lastCursor)
	}
	checkout("dark-", 5)
	want = append(want, truth.collect(t, 5, 10*time.Second)...)
	if n := len(p.of("message")); n != 5 {
		t.Fatalf("the page has %d expirations while disconnected, want 5", n)
	}
	p.release()
	p.waitFor(t, 10*time.Second, "the 5 missed expirations in the page", messages(10))

	checkout("back-", 3)
	want = append(want, truth.collect(t, 3, 10*time.Second)...)
	p.waitFor(t, 10*time.Second, "13 expirations in the page", messages(13))
	time.Sleep(300 * time.Millisecond) // for any repeat to show

	type seen struct{ ID, Cursor, Order string }
	var wantSeen, gotSeen []seen
	for _, ev := range want {
		wantSeen = append(wantSeen, seen{ev.GetCursor(), ev.GetCursor(), ev.GetOrderId()})
	}
	for _, m := range p.of("message") {
		gotSeen = append(gotSeen, seen{m.LastEventID, fmt.Sprint(m.Data["cursor"]), fmt.Sprint(m.Data["orderId"])})
	}
	if diff := cmp.Diff(wantSeen, gotSeen); diff != "" {
		t.Fatalf("expirations the page received (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"", lastCursor}, p.watchRequests()); diff != "" {
		t.Errorf("Last-Event-ID of the watch requests (-want +got):\n%s", diff)
	}
	// The drop was an error to the page, after which it reconnected
	// (readyState CONNECTING), never gave up (CLOSED).
	errs := p.of("error")
	if len(errs) == 0 || errs[0].ReadyState != 0 || len(p.of("open")) != 2 || len(p.of("watch-error")) != 0 {
		t.Errorf("reports: %d error (first %+v), %d open, %d watch-error; want errors in state CONNECTING, 2 opens, no watch-error",
			len(errs), errs, len(p.of("open")), len(p.of("watch-error")))
	}
	t.Logf("the page received %d expirations over 2 connections; reconnected with Last-Event-ID %s", len(gotSeen), lastCursor)
}

// chromiumPath finds Debian's Chromium; the test fails without it. A
// test that drives Chromium is skipped with -short: this is where.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("drives Chromium: skipped with -short")
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("the browser test needs Chromium (/usr/bin/chromium or chromium on PATH): apt-get install chromium")
	return ""
}

// startChromium runs headless Chromium on url with a fresh profile until the
// test ends, then stops it and every process it started.
func startChromium(t *testing.T, path, url string) {
	t.Helper()
	cmd := exec.Command(path,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		// Nothing but the page: the machine's network is closed.
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), url)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// SIGTERM lets Chromium end its own processes; SIGKILL to its
		// process group ends whatever is left.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("chromium output:\n%s", out.String())
		}
	})
}

// pageReport is what the page posts to /report.
type pageReport struct {
	Seq         int            `json:"seq"`
	Type        string         `json:"type"` // open, message, watch-error, error
	LastEventID string         `json:"lastEventId"`
	Data        map[string]any `json:"data"`
	ReadyState  int            `json:"readyState"`
}

// browserPage is the test's web server for the browser: the page at /,
// the service's REST API at /v1/ through a reverse proxy (same origin), and
// the page's reports at POST /report.
type browserPage struct {
	srv *httptest.Server

	mu       sync.Mutex
	reports  []pageReport
	bySeq    map[int]bool
	watches  []string      // the Last-Event-ID of each watch request
	holdOpen chan struct{} // while non-nil, watch requests wait for it to close
}

func newBrowserPage(t *testing.T, s *server) *browserPage {
	t.Helper()
	html, err := os.ReadFile("testdata/eventsource.html")
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse("http://" + s.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	proxy.ErrorLog = log.New(io.Discard, "", 0) // the drop makes copy errors

	p := &browserPage{bySeq: map[int]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(html)
	})
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var rep pageReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		if !p.bySeq[rep.Seq] {
			p.bySeq[rep.Seq] = true
			p.reports = append(p.reports, rep)
		}
		p.mu.Unlock()
	})
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/expirations:watch" {
			p.mu.Lock()
			p.watches = append(p.watches, r.Header.Get("Last-Event-ID"))
			hold := p.holdOpen
			p.mu.Unlock()
			if hold != nil {
				select {
				case <-hold:
				case <-r.Context().Done():
					return
				}
			}
		}
		proxy.ServeHTTP(w, r)
	})
	p.srv = httptest.NewServer(mux) // on 127.0.0.1:0
	t.Cleanup(func() {
		p.release()
		p.srv.CloseClientConnections()
		p.srv.Close()
	})
	return p
}

// drop closes every connection the browser has to the page's server,
// the event stream among them.
func (p *browserPage) drop() { p.srv.CloseClientConnections() }

// hold makes watch requests wait until release.
func (p *browserPage) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holdOpen = make(chan struct{})
}

func (p *browserPage) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holdOpen != nil {
		close(p.holdOpen)
		p.holdOpen = nil
	}
}

// of returns the reports of one type, in the page's order.
func (p *browserPage) of(typ string) []pageReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []pageReport
	for _, r := range p.reports {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

func (p *browserPage) watchRequests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.watches...)
}

// waitFor polls cond until it holds, failing after timeout.
func (p *browserPage) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Fatalf("waited %s for %s; the page reported %+v; watch requests (Last-Event-ID) %q", timeout, what, p.reports, p.watches)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSSEWatch checks the event stream on the wire: the retry line, each
// expiration as id and data, resuming from Last-Event-ID (over
// after_cursor), the refusal of a bad Last-Event-ID, and the watch-error
// event that ends it when the server stops.
func TestSSEWatch(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		first := s.sseWatch(t, "", "")
		if b := first.next(t); b != "retry: 1000" {
			t.Fatalf("first block %q, want retry: 1000", b)
		}
		for i := range 3 {
			if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("sse-", i), Ttl: ttl(time.Duration(100+20*i) * time.Millisecond)}); err != nil {
				t.Fatal(err)
			}
		}
		var ids []string
		for i := range 3 {
			id, data := sseEvent(t, first.next(t))
			if data["cursor"] != id || data["orderId"] != fmt.Sprint("sse-", i) || data["expiredAt"] == nil || data["metadata"] == nil {
				t.Fatalf("event %d: id %q, data %v", i, id, data)
			}
			if len(ids) > 0 && !cursorLess(ids[len(ids)-1], id) {
				t.Fatalf("cursor %s does not follow %s", id, ids[len(ids)-1])
			}
			ids = append(ids, id)
		}

		// Last-Event-ID wins over after_cursor (which a page's URL keeps).
		resumed := s.sseWatch(t, "?after_cursor="+ids[2], ids[0])
		if b := resumed.next(t); b != "retry: 1000" {
			t.Fatalf("first block %q, want retry: 1000", b)
		}
		for _, want := range ids[1:] {
			if id, _ := sseEvent(t, resumed.next(t)); id != want {
				t.Fatalf("resumed event %s, want %s", id, want)
			}
		}

		for _, tc := range []struct {
			lastEventID string
			status      int
			mention     string
		}{
			{"ord-1", 400, "Last-Event-ID"},
			{"1-2-3", 400, "Last-Event-ID"},
			{"5-0", 410, "retention"},
		} {
			code, ctype, body := s.sseReject(t, tc.lastEventID)
			msg, _ := body["message"].(string)
			if code != tc.status || ctype != "application/json" || !strings.Contains(msg, tc.mention) {
				t.Errorf("Last-Event-ID %q: %d %s %v; want %d JSON naming %q", tc.lastEventID, code, ctype, body, tc.status, tc.mention)
			}
		}

		if !s.Stop(syscall.SIGTERM) {
			t.Fatal("the server did not stop within 15s of SIGTERM")
		}
		for _, w := range []*sseStream{first, resumed} {
			b := w.next(t)
			ev, data, _ := strings.Cut(b, "\n")
			var e map[string]any
			if ev != "event: watch-error" || json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &e) != nil {
				t.Fatalf("last block %q, want a watch-error event", b)
			}
			if e["code"] != float64(14) || e["status"] != "UNAVAILABLE" || !strings.Contains(fmt.Sprint(e["message"]), "after_cursor="+ids[2]) {
				t.Fatalf("watch-error %v; want UNAVAILABLE with the cursor to resume from", e)
			}
			if b, ok := <-w.blocks; ok {
				t.Fatalf("the stream went on after its watch-error: %q", b)
			}
		}
	})
}

// sseStream reads the blocks (lines up to a blank line, joined by "\n") of
// an event stream.
type sseStream struct{ blocks chan string }

// sseWatch opens the watch as an EventSource does, with the query and a
// Last-Event-ID ("" for none), and checks the response's headers.
func (s *server) sseWatch(t *testing.T, query, lastEventID string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+s.HTTPAddr+"/v1/expirations:watch"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); resp.StatusCode != 200 || got != want {
			t.Fatalf("watch: %s with %s %q, want 200 with %q", resp.Status, k, got, want)
		}
	}
	w := &sseStream{blocks: make(chan string, 1000)}
	go func() {
		defer resp.Body.Close()
		defer close(w.blocks)
		sc := bufio.NewScanner(resp.Body)
		var lines []string
		for sc.Scan() {
			if sc.Text() != "" {
				lines = append(lines, sc.Text())
				continue
			}
			w.blocks <- strings.Join(lines, "\n")
			lines = nil
		}
	}()
	return w
}

func (w *sseStream) next(t *testing.T) string {
	t.Helper()
	select {
	case b, ok := <-w.blocks:
		if !ok {
			t.Fatal("the event stream ended")
		}
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return ""
}

// sseEvent parses an event block: its id and the JSON of its one data line.
func sseEvent(t *testing.T, block string) (string, map[string]any) {
	t.Helper()
	lines := strings.Split(block, "\n")
	var data map[string]any
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "id: ") || !strings.HasPrefix(lines[1], "data: ") ||
		json.Unmarshal([]byte(strings.TrimPrefix(lines[1], "data: ")), &data) != nil {
		t.Fatalf("block %q is not an id and a data line of JSON", block)
	}
	return strings.TrimPrefix(lines[0], "id: "), data
}

// sseReject opens an event stream with a Last-Event-ID the server refuses,
// and returns the status, the Content-Type and the JSON body.
func (s *server) sseReject(t *testing.T, lastEventID string) (int, string, map[string]any) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+s.HTTPAddr+"/v1/expirations:watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", lastEventID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("Last-Event-ID %q: %s with a body that is not JSON: %v", lastEventID, resp.Status, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), body
}
