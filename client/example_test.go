package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/client"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// A client over TLS with a private CA and a bearer token; every RPC of the
// service is a method of the client.
func ExampleDial() {
	c, err := client.Dial("orders.example.com:9090", client.Options{
		CAFile: "ca.pem",
		Token:  os.Getenv("ORDEREXPIRY_TOKEN"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: "o-42", Ttl: durationpb.New(15 * time.Minute)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.GetOrder().GetDeadline().AsTime())
}

// Every expiration from a saved cursor on, saving the cursor of each one
// handled: after a restart, the watch goes on where it stopped.
func ExampleClient_Watch() {
	c, err := client.Dial("localhost:9090", client.Options{Insecure: true})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	after, _ := os.ReadFile("cursor")
	err = c.Watch(context.Background(), string(after), func(ev *pb.ExpirationEvent) error {
		fmt.Println("expired", ev.GetOrderId())
		// An error here stops the watch, which returns it.
		return os.WriteFile("cursor", []byte(ev.GetCursor()), 0o600)
	})
	log.Fatal(err)
}

// A worker of the group "billing": run several, and each expiration is
// handled by one of them. Four handlers run at once, and the service sends
// the worker no more than four expirations before it settles one. An error
// hands the expiration back, to be delivered again a minute later; the
// handler's context ends at the group's ack deadline, after which the
// expiration is delivered again anyway.
func ExampleClient_Consume() {
	c, err := client.Dial("localhost:9090", client.Options{Insecure: true})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	opts := client.ConsumeOptions{Consumer: "worker-1", Concurrency: 4, NackDelay: time.Minute}
	err = c.Consume(context.Background(), "billing", opts, func(ctx context.Context, ev *pb.ExpirationEvent) error {
		if ev.GetMetadata()["sku"] == "" {
			return errors.New("no sku yet")
		}
		return releaseStock(ctx, ev.GetOrderId())
	})
	log.Fatal(err)
}

// releaseStock stands for the work a handler does, which stops when ctx
// ends.
func releaseStock(ctx context.Context, orderID string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://inventory.internal/release/"+url.PathEscape(orderID), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("inventory answered %s", resp.Status)
	}
	return nil
}

// One merchant's pending orders, earliest deadline first, page after page.
func ExampleClient_Orders() {
	c, err := client.Dial("localhost:9090", client.Options{Insecure: true})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	req := &pb.ListOrdersRequest{Filter: `status = PENDING AND metadata.merchant = "m-42"`, PageSize: 200}
	for o, err := range c.Orders(context.Background(), req) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(o.GetOrderId(), o.GetDeadline().AsTime())
	}
}
