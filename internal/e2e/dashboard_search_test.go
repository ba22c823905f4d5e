package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestDashboardSearch drives the dashboard's search in headless Chromium:
// a filter lists its orders a page of 25 at a time, in deadline order, with
// next and previous pages; the order can be reversed; a bad filter shows the
// service's message, which names the column.
func TestDashboardSearch(t *testing.T) {
	chromium := chromiumPath(t)
	s := startServerWith(t, serverOptions{}, nil)
	ctx := context.Background()
	var reqs []*pb.CheckoutRequest
	for i := range 60 {
		reqs = append(reqs, &pb.CheckoutRequest{OrderId: fmt.Sprintf("srch-%02d", i), Ttl: ttl(time.Hour + time.Duration(i)*time.Second),
			Metadata: map[string]string{"merchant": fmt.Sprint("m-", i%2)}})
	}
	if _, err := s.Client.BatchCheckout(ctx, &pb.BatchCheckoutRequest{Requests: reqs}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: "srch-01"}); err != nil {
		t.Fatal(err)
	}
	b := openDashboard(t, chromium, s.URL("/ui/"))
	b.waitFor(t, "the watch to be live", `document.getElementById("conn").dataset.state === "live"`)

	const rows = `[...document.querySelectorAll("#search-results tbody tr")].map(r => r.dataset.order)`
	b.do(t, chromedp.SendKeys(chromedp.CSS("#search-filter"), `metadata.merchant = "m-1"`), chromedp.Click(chromedp.CSS("#search-button")))
	b.waitFor(t, "the first page of merchant m-1's 30 orders", `(() => {
		const ids = `+rows+`;
		return ids.length === 25 && ids[0] === "srch-01" && ids[24] === "srch-49" &&
			document.querySelector('#search-results tr[data-order="srch-01"] td.status').textContent === "completed" &&
			text("search-page") === "page 1: 25 orders" &&
			!document.getElementById("search-next").disabled && document.getElementById("search-prev").disabled;
	})()`)
	b.do(t, chromedp.Click(chromedp.CSS("#search-next")))
	b.waitFor(t, "the second and last page", `(() => {
		const ids = `+rows+`;
		return ids.join(" ") === "srch-51 srch-53 srch-55 srch-57 srch-59" && text("search-page") === "page 2: 5 orders, the last page" &&
			document.getElementById("search-next").disabled && !document.getElementById("search-prev").disabled;
	})()`)
	b.do(t, chromedp.Click(chromedp.CSS("#search-prev")))
	b.waitFor(t, "the first page again", `(() => { const ids = `+rows+`; return ids.length === 25 && ids[0] === "srch-01"; })()`)

	// Latest deadline first.
	b.do(t, chromedp.SetValue(chromedp.CSS("#search-order"), "deadline desc"), chromedp.Click(chromedp.CSS("#search-button")))
	b.waitFor(t, "the latest deadline first", `(() => { const ids = `+rows+`; return ids.length === 25 && ids[0] === "srch-59" && text("search-page") === "page 1: 25 orders"; })()`)

	// A bad filter: the service's message, with the column.
	b.do(t, chromedp.SetValue(chromedp.CSS("#search-filter"), "status = PAID"), chromedp.Click(chromedp.CSS("#search-button")))
	b.waitFor(t, "the filter's error", `!document.getElementById("search-error").hidden &&
		text("search-error").includes("column 10") && `+rows+`.length === 0`)

	if bad := b.foreign(s.URL("/")); len(bad) > 0 {
		t.Errorf("the page made requests outside the server's origin: %v", bad)
	}
	if errs := b.problems(); len(errs) > 0 {
		t.Errorf("the page reported errors: %v", errs)
	}
}
