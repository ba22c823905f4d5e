// Command contend loads the machine for the fault suite under contention
// (make torture-faults and torture-failover): CPU burners that spin, and disk burners that write
// and fsync a file over and over, the load under which Redis's everysec
// AOF postpones its writes. It stops by itself after -for, when its parent
// exits, or on SIGINT or SIGTERM, and removes its files.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "contend:", err)
		os.Exit(1)
	}
}

func run() error {
	cpu := flag.Int("cpu", 2, "CPU burners: goroutines that spin")
	disk := flag.Int("disk", 1, "disk burners: each writes 1 MiB and fsyncs, over and over")
	dir := flag.String("dir", os.TempDir(), "where the disk burners write (the disk the tests' Redis writes its AOF on)")
	limit := flag.Duration("for", 10*time.Minute, "stop after this long")
	flag.Parse()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, *limit)
	defer cancelTimeout()
	// A burner outliving whoever started it would load the machine for
	// nothing: stop when the parent goes.
	parent := os.Getppid()
	go func() {
		for ctx.Err() == nil {
			if os.Getppid() != parent {
				cancel()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	var wg sync.WaitGroup
	for range *cpu {
		wg.Go(func() {
			x := uint64(1)
			for ctx.Err() == nil {
				for range 1 << 20 {
					x = x*6364136223846793005 + 1442695040888963407
				}
			}
			_ = x
		})
	}
	errs := make(chan error, *disk)
	for i := range *disk {
		wg.Go(func() {
			name := filepath.Join(*dir, fmt.Sprintf("contend-%d-%d", os.Getpid(), i))
			defer os.Remove(name)
			if err := fsyncLoop(ctx, name); err != nil {
				errs <- err
				cancel()
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// fsyncLoop writes 1 MiB to name and fsyncs it, 64 times over, then starts
// the file again, until ctx ends.
func fsyncLoop(ctx context.Context, name string) error {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for ctx.Err() == nil {
		f, err := os.Create(name)
		if err != nil {
			return err
		}
		for i := 0; i < 64 && ctx.Err() == nil; i++ {
			if _, err := f.Write(buf); err != nil {
				f.Close()
				return err
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}
