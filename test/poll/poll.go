// Package poll waits in tests for a condition that becomes true
// asynchronously (a BGP session, a kernel route, an API object).
package poll

import (
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
