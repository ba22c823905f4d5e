package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// dashboardScreenshot is the screenshot docs/dashboard.md shows. The test writes
// it there when UPDATE_SCREENSHOT is set, and to its temporary directory
// otherwise, so that a run does not change the checked-in file.
const dashboardScreenshot = "testdata/dashboard.png"

// TestDashboard drives the dashboard at /ui/ in headless Chromium, on a
// Redis store of three partitions with a bearer token set, while orders
// expire, and asserts what the page shows: it asks for the token (and again
// when the token is refused), the counts by status move, the expirations
// appear live and as dots of the lateness chart, the partitions show their
// pending orders, a group's backlog drains while a consumer takes its
// events and acknowledges them over gRPC, a group's dead letters are put
// back by the page's redrive button, and the order lookup finds an order.
// Every request the page makes goes to the server's own origin.
func TestDashboard(t *testing.T) {
	chromium := chromiumPath(t)
	const token = "dashboard-token-1"
	r := redistest.Start(t)
	s := startServerWith(t, serverOptions{Token: token},
		map[string]string{"REDIS_URL": r.URL(), "AUTH_TOKENS": token}, "-redis-partitions", "3")
	ctx := context.Background()

	// The page is open: it holds no data. Its data is not.
	resp, err := http.Get(s.URL("/ui/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "connect-src 'self'") {
		t.Fatalf("GET /ui/ without a token: %d, Content-Security-Policy %q; want 200 and a policy that keeps the page to its origin",
			resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	if resp, err := http.Get(s.URL("/v1/stats")); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/stats without a token: %v, %v; want 401", resp, err)
	}

	// The groups come first, so that every expiration reaches them.
	for _, g := range []*pb.CreateConsumerGroupRequest{
		{GroupId: "billing"},
		{GroupId: "audit", AckDeadline: durationpb.New(100 * time.Millisecond), MaxDeliveries: 1},
	} {
		if _, err := s.Client.CreateConsumerGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}

	b := openDashboard(t, chromium, s.URL("/ui/"))

	// The token: a wrong one is refused and asked for again.
	b.waitFor(t, "the page to ask for a token", `document.getElementById("token-dialog").open`)
	b.do(t, chromedp.SendKeys(chromedp.CSS("#token-input"), "wrong-token"), chromedp.Click(chromedp.CSS("#token-submit")))
	b.waitFor(t, "the page to say the token was refused", `document.getElementById("token-dialog").open &&
		document.getElementById("token-error").textContent.includes("refused the token")`)
	b.do(t, chromedp.SendKeys(chromedp.CSS("#token-input"), token), chromedp.Click(chromedp.CSS("#token-submit")))
	b.waitFor(t, "the watch to be live", `document.getElementById("conn").dataset.state === "live"`)
	b.waitFor(t, "the first stats", `text("count-pending") === "0" && text("count-expired") === "0"`)

	// Orders: five stay pending, of which one is then completed and one
	// cancelled; twelve expire, a few milliseconds apart.
	for i := range 5 {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("keep-", i), Ttl: ttl(time.Hour),
			Metadata: map[string]string{"customer": fmt.Sprint("c-", 100+i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: "keep-3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: "keep-4"}); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "the counts of the checkouts", `text("count-pending") === "3" && text("count-completed") === "1" && text("count-cancelled") === "1"`)
	const expiring = 12
	for i := range expiring {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprintf("exp-%02d", i), Ttl: ttl(time.Duration(300+40*i) * time.Millisecond),
			Metadata: map[string]string{"customer": fmt.Sprint("c-", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	b.waitFor(t, "the counts to move", `text("count-pending") === "3" && text("count-expired") === "12" &&
		text("count-completed") === "1" && text("count-cancelled") === "1"`)
	b.waitFor(t, "12 expirations in the live table", `document.querySelectorAll('#events tbody tr[data-order^="exp-"]').length === 12 &&
		text("events-count") === "12"`)
	b.waitFor(t, "a dot of the lateness chart for each expiration", `document.querySelectorAll("#lateness-chart circle").length === 12`)
	b.waitFor(t, "three partitions holding the 3 pending orders", `(() => {
		const rows = [...document.querySelectorAll("#partitions tbody tr")];
		const sum = rows.reduce((n, r) => n + Number(r.cells[1].textContent), 0);
		const next = rows.filter(r => r.cells[2].textContent.includes("(in ")).length;
		return rows.length === 3 && sum === 3 && next >= 1;
	})()`)
	b.waitFor(t, "each group's backlog of 12", `group("billing", "backlog") === "12" && group("audit", "backlog") === "12"`)

	// billing: a consumer takes the 12, then acknowledges them.
	c := s.consume(t, "billing", "worker", 100)
	var ackIDs []string
	for range expiring {
		ackIDs = append(ackIDs, c.next(t, 10*time.Second).GetAckId())
	}
	b.waitFor(t, "billing's backlog drained into in flight", `group("billing", "backlog") === "0" && group("billing", "in-flight") === "12"`)
	if _, err := s.Client.AcknowledgeExpirations(ctx, &pb.AcknowledgeExpirationsRequest{GroupId: "billing", AckIds: ackIDs}); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "billing's events acknowledged", `group("billing", "backlog") === "0" && group("billing", "in-flight") === "0"`)

	// audit: its one delivery of each event lapses, so they become dead
	// letters; then the page's button redrives them, back to the backlog.
	pulled := 0
	for pulled < expiring {
		resp, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "audit", MaxEvents: 100, Wait: durationpb.New(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		pulled += len(resp.GetReceivedExpirations())
	}
	deadLetters := func() int {
		t.Helper()
		resp, err := s.Client.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{GroupId: "audit"})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetDeadLetters())
	}
	for until := time.Now().Add(10 * time.Second); deadLetters() < expiring; {
		if time.Now().After(until) {
			t.Fatalf("audit has %d dead letters 10s after its deliveries lapsed, want %d", deadLetters(), expiring)
		}
		time.Sleep(150 * time.Millisecond) // past the ack deadline of 100ms
		if _, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "audit", Wait: durationpb.New(0)}); err != nil {
			t.Fatal(err)
		}
	}
	b.waitFor(t, "audit's 12 dead letters, and its redrive button enabled", `group("audit", "dead-letters") === "12" &&
		!document.querySelector('#groups tr[data-group="audit"] button.redrive').disabled`)
	// The redrive asks first: cancelled, nothing moves; confirmed, it runs.
	b.do(t, chromedp.Click(chromedp.CSS(`#groups tr[data-group="audit"] button.redrive`)))
	b.waitFor(t, "the redrive to ask for confirmation", `!document.getElementById("redrive-confirm").hidden &&
		document.querySelector("#redrive-confirm .confirm-text").textContent.startsWith("Redrive 12 dead letters of audit?")`)
	b.do(t, chromedp.Click(chromedp.CSS(`#redrive-confirm button.confirm-no`)))
	b.waitFor(t, "the redrive to be called off", `text("redrive-result") === "Redrive of audit not done." &&
		document.getElementById("redrive-confirm").hidden`)
	if n := deadLetters(); n != expiring {
		t.Fatalf("audit has %d dead letters after a redrive called off, want %d", n, expiring)
	}
	b.waitFor(t, "the redrive button enabled again", `!document.querySelector('#groups tr[data-group="audit"] button.redrive').disabled`)
	b.do(t, chromedp.Click(chromedp.CSS(`#groups tr[data-group="audit"] button.redrive`)))
	b.waitFor(t, "the redrive to ask again", `!document.getElementById("redrive-confirm").hidden`)
	b.do(t, chromedp.Click(chromedp.CSS(`#redrive-confirm button.confirm-yes`)))
	b.waitFor(t, "the redrive to be done", `text("redrive-result") === "Redrove 12 dead letters of audit." &&
		group("audit", "dead-letters") === "0" && group("audit", "backlog") === "12" && group("audit", "in-flight") === "0"`)
	if n := deadLetters(); n != 0 {
		t.Fatalf("audit has %d dead letters after the page's redrive, want 0", n)
	}
	// The redriven events are delivered again, from their first attempt.
	var redriven []string
	for len(redriven) < expiring {
		resp, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "audit", MaxEvents: 100, Wait: durationpb.New(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range resp.GetReceivedExpirations() {
			if d.GetDeliveryAttempt() != 1 {
				t.Errorf("a redriven event came with delivery attempt %d, want 1", d.GetDeliveryAttempt())
			}
			redriven = append(redriven, d.GetAckId())
		}
	}
	if _, err := s.Client.AcknowledgeExpirations(ctx, &pb.AcknowledgeExpirationsRequest{GroupId: "audit", AckIds: redriven}); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "audit's redriven events acknowledged", `group("audit", "in-flight") === "0" && group("audit", "dead-letters") === "0"`)

	// The lookup: an unknown order, then a completed one.
	b.do(t, chromedp.SendKeys(chromedp.CSS("#lookup-input"), "nope-1"), chromedp.Click(chromedp.CSS("#lookup-button")))
	b.waitFor(t, "the lookup of an unknown order to say so", `text("lookup-error").includes("not found")`)
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.getElementById("lookup-input").value = ""`)); err != nil {
		t.Fatal(err)
	}
	b.do(t, chromedp.SendKeys(chromedp.CSS("#lookup-input"), "keep-3"), chromedp.Click(chromedp.CSS("#lookup-button")))
	b.waitFor(t, "the lookup of keep-3", `field("status") === "completed" && field("metadata customer") === "c-103" &&
		document.getElementById("lookup-error").hidden`)

	// A bulk change: previewed by a dry run, whose count the confirmation
	// shows; called off, then confirmed. keep-0..2 are the pending ones.
	reschedules := func(id string) int32 {
		t.Helper()
		o, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: id})
		if err != nil {
			t.Fatal(err)
		}
		return o.GetReschedules()
	}
	b.do(t, chromedp.SendKeys(chromedp.CSS("#bulk-filter"), `order_id = "keep-*"`), chromedp.Click(chromedp.CSS("#bulk-button")))
	b.waitFor(t, "the bulk change to ask with the dry run's count", `!document.getElementById("bulk-confirm").hidden &&
		document.querySelector("#bulk-confirm .confirm-text").textContent.startsWith("Shift by 1200s for 3 pending orders matching")`)
	b.do(t, chromedp.Click(chromedp.CSS(`#bulk-confirm button.confirm-no`)))
	b.waitFor(t, "the bulk change to be called off", `text("bulk-result") === "Not done: nothing was changed."`)
	if n := reschedules("keep-0"); n != 0 {
		t.Fatalf("keep-0 rescheduled %d times by a bulk change called off", n)
	}
	b.do(t, chromedp.Click(chromedp.CSS("#bulk-button")))
	b.waitFor(t, "the bulk change to ask again", `!document.getElementById("bulk-confirm").hidden`)
	b.do(t, chromedp.Click(chromedp.CSS(`#bulk-confirm button.confirm-yes`)))
	b.waitFor(t, "the bulk change to be done", `text("bulk-result") === "Done: matched 3, changed 3, skipped 0, failed 0."`)
	for _, id := range []string{"keep-0", "keep-1", "keep-2"} {
		if n := reschedules(id); n != 1 {
			t.Errorf("%s rescheduled %d times by the page's bulk change, want 1", id, n)
		}
	}

	// More expirations, so that the screenshot shows them arrive.
	for i := range 8 {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprintf("late-%02d", i), Ttl: ttl(time.Duration(200+60*i) * time.Millisecond),
			Metadata: map[string]string{"customer": fmt.Sprint("c-", 200+i)}}); err != nil {
			t.Fatal(err)
		}
	}
	b.waitFor(t, "20 expirations", `text("count-expired") === "20" && text("events-count") === "20"`)
	time.Sleep(1500 * time.Millisecond) // a stats poll after the last one, for the picture
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "dashboard.png")
	if os.Getenv("UPDATE_SCREENSHOT") != "" {
		out = dashboardScreenshot
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))

	if bad := b.foreign(s.URL("/")); len(bad) > 0 {
		t.Errorf("the page made requests outside the server's origin: %v", bad)
	}
	if errs := b.problems(); len(errs) > 0 {
		t.Errorf("the page reported errors: %v", errs)
	}
}

// dashboard is the page open in a headless Chromium.
type dashboard struct {
	ctx context.Context

	mu       sync.Mutex
	requests []string
	errors   []string
}

// dashboardHelpers are functions the conditions of waitFor use.
const dashboardHelpers = `
const text = (id) => document.getElementById(id).textContent;
const group = (id, col) => { const c = document.querySelector('#groups tr[data-group="' + id + '"] td.' + col); return c ? c.textContent : null; };
const field = (k) => { const d = document.querySelector('#lookup-result dd[data-field="' + k + '"]'); return d ? d.textContent : null; };
`

// openDashboard starts Chromium (chromedp) on the page until the test
// ends, recording the requests it makes and the errors it reports.
func openDashboard(t *testing.T, chromium, url string) *dashboard {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000),
		// Nothing but the page: the machine's network is closed.
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-quic", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b := &dashboard{ctx: ctx}
	// Listen starts the browser; its handler must not block.
	if err := chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			b.requests = append(b.requests, ev.Request.URL)
		case *runtime.EventExceptionThrown:
			msg := ev.ExceptionDetails.Text
			if ex := ev.ExceptionDetails.Exception; ex != nil {
				msg += " " + ex.Description
			}
			b.errors = append(b.errors, "exception: "+msg)
		case *log.EventEntryAdded:
			// A 401 is logged as a failed load, which the wrong token
			// causes on purpose; a refusal by the content security
			// policy is a fault of the page.
			if strings.Contains(ev.Entry.Text, "Content Security Policy") {
				b.errors = append(b.errors, ev.Entry.Text)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	b.do(t, chromedp.Navigate(url))
	return b
}

func (b *dashboard) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("in the browser: %v", err)
	}
}

// waitFor waits until the JavaScript condition holds in the page, and fails
// the test with what the page shows when it does not within 20s.
func (b *dashboard) waitFor(t *testing.T, what, cond string) {
	t.Helper()
	expr := "(() => {" + dashboardHelpers + "try { return !!(" + cond + "); } catch (e) { return false; } })()"
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](expr))
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			shown, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector("main").innerText`))
			t.Fatalf("the page did not show %s within 20s; it shows:\n%s", what, shown)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// foreign returns the requests the page made outside origin.
func (b *dashboard) foreign(origin string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, u := range b.requests {
		if !strings.HasPrefix(u, origin) {
			out = append(out, u)
		}
	}
	return out
}

func (b *dashboard) problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}
