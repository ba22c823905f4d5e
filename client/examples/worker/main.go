// Command worker handles the expirations of an orderexpiry consumer group:
// run several with the same -group and each expiration is handled by one of
// them. It is an example of client.Consume:
//
//	go run ./client/examples/worker -addr localhost:9090 -insecure -group billing
//
// It creates the group when it does not exist yet (with the service's
// default settings), and again whenever the group is gone (NOT_FOUND: it
// was deleted, or Redis lost it with the rest of its data), then prints
// "handled <order id>" for each expiration and acknowledges it, with
// -concurrency handlers at once, each taking -work to do its work. A
// handler whose context ends first (the group's ack deadline passed, or
// the worker is stopping) prints "stopped <order id>: <why>" and gives up:
// the group delivers the expiration again. With -fail-first, it fails the
// first delivery of each order, which hands it back to the group to be
// delivered again after -nack-delay.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/client"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

func main() {
	addr := flag.String("addr", "localhost:9090", "the service's gRPC address")
	token := flag.String("token", os.Getenv("ORDEREXPIRY_TOKEN"), "bearer token (default $ORDEREXPIRY_TOKEN)")
	insecure := flag.Bool("insecure", false, "dial without TLS")
	ca := flag.String("ca", "", "PEM file of the CA that signed the service's certificate (default: the system's)")
	group := flag.String("group", "workers", "the consumer group")
	consumer := flag.String("consumer", "", "this worker's name in the group (default: one per stream)")
	failFirst := flag.Bool("fail-first", false, "fail the first delivery of each order, to show it handed back")
	concurrency := flag.Int("concurrency", 1, "how many expirations to handle at once")
	work := flag.Duration("work", 0, "how long handling an expiration takes")
	nackDelay := flag.Duration("nack-delay", 0, "how long after a failure the expiration is delivered again (at most the group's ack deadline)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *token, *insecure, *ca, *group, *failFirst, *work,
		client.ConsumeOptions{Consumer: *consumer, Concurrency: *concurrency, NackDelay: *nackDelay}); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, token string, insecure bool, ca, group string, failFirst bool, work time.Duration, opts client.ConsumeOptions) error {
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
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// Consume calls the handler in up to opts.Concurrency goroutines at
	// once.
	var mu sync.Mutex
	failed := map[string]bool{}
	first := func(id string) bool {
		mu.Lock()
		defer mu.Unlock()
		f := !failed[id]
		failed[id] = true
		return f
	}
	handle := func(ctx context.Context, ev *pb.ExpirationEvent) error {
		id := ev.GetOrderId()
		if failFirst && first(id) {
			fmt.Printf("failed %s\n", id)
			return errors.New("the first delivery fails")
		}
		// The work, which stops when the context ends: the group delivers
		// the expiration again then, so finishing it would be wasted.
		select {
		case <-time.After(work):
		case <-ctx.Done():
			fmt.Printf("stopped %s: %v\n", id, ctx.Err())
			return ctx.Err()
		}
		_, err := fmt.Printf("handled %s\n", id)
		return err
	}
	for {
		// A group that exists already, with whatever settings, is used as
		// it is.
		if _, err := c.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: group}); err != nil && status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("creating the group %s: %w", group, err)
		}
		err := c.Consume(ctx, group, opts, handle)
		if !gone(err) {
			return err
		}
		// The group is gone: deleted, or lost with Redis's data. The
		// expirations since are lost to it; those from now on are not.
		log.Warn("worker: the consumer group is gone; creating it again", "group", group, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// gone says whether Consume ended because the group is gone: NOT_FOUND,
// or, for a second after Redis lost its data, FAILED_PRECONDITION saying
// that the group is incomplete and to create it again.
func gone(err error) bool {
	st := status.Convert(err)
	return st.Code() == codes.NotFound ||
		st.Code() == codes.FailedPrecondition && strings.Contains(st.Message(), "create it again")
}
