// Package poll waits for a condition that becomes true asynchronously (a
// BGP session, a kernel route, an API object): Until in tests, Err in the
// lab and the benchmarks.
package poll

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Until calls cond every interval until it reports true, and fails t with
// what and cond's last state once timeout has passed without.
func Until(t testing.TB, timeout, interval time.Duration, what string, cond func() (ok bool, state string)) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s; last state:\n%s", timeout, what, state)
		case <-tick.C:
		}
	}
}

// Err calls cond every interval until it returns nil, and returns an error
// with cond's last error once timeout has passed or ctx ends. A cond that
// returns an error wrapping ErrStop ends the wait at once with that error.
func Err(ctx context.Context, timeout, interval time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil || errors.Is(err, ErrStop) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-tick.C:
		}
	}
}

// ErrStop, wrapped in a cond's error, tells Err to stop waiting.
var ErrStop = errors.New("stop waiting")
