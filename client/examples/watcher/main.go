// Command watcher prints every expiration of an orderexpiry service, one a
// line, and resumes after the last one printed whenever its stream ends. It
// is an example of client.Watch:
//
//	go run ./client/examples/watcher -addr localhost:9090 -insecure -after 0-0
//
// Each line is "expired <order id> cursor=<cursor>"; pass the last cursor as
// -after to go on from there after a restart.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/orderexpiry/orderexpiry/client"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

func main() {
	addr := flag.String("addr", "localhost:9090", "the service's gRPC address")
	token := flag.String("token", os.Getenv("ORDEREXPIRY_TOKEN"), "bearer token (default $ORDEREXPIRY_TOKEN)")
	insecure := flag.Bool("insecure", false, "dial without TLS")
	ca := flag.String("ca", "", "PEM file of the CA that signed the service's certificate (default: the system's)")
	after := flag.String("after", "", `start after this cursor ("0-0": all that is retained; "": live only)`)
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *token, *insecure, *ca, *after); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "watcher:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, token string, insecure bool, ca, after string) error {
	c, err := client.Dial(addr, client.Options{
		Token:    token,
		Insecure: insecure,
		CAFile:   ca,
		// The reconnections are told on stderr.
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Watch(ctx, after, func(ev *pb.ExpirationEvent) error {
		_, err := fmt.Printf("expired %s cursor=%s\n", ev.GetOrderId(), ev.GetCursor())
		return err
	})
}
