package poll

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records the message and stops the
// goroutine, as testing.T's does, so Until's failure can be checked.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestUntilReturnsOnceTrue(t *testing.T) {
	calls := 0
	Until(t, 5*time.Second, time.Millisecond, "the third call", func() (bool, string) {
		calls++
		return calls == 3, ""
	})
	if calls != 3 {
		t.Errorf("cond called %d times, want 3", calls)
	}
}

func TestUntilFailsWithLastState(t *testing.T) {
	r := &recorder{TB: t}
	calls := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		Until(r, 50*time.Millisecond, 5*time.Millisecond, "never", func() (bool, string) {
			calls++
			return false, fmt.Sprintf("call %d", calls)
		})
	}()
	<-done
	want := fmt.Sprintf("timed out after 50ms waiting for never; last state:\ncall %d", calls)
	if r.msg != want {
		t.Errorf("failure %q, want %q", r.msg, want)
	}
	if calls < 2 {
		t.Errorf("cond called %d times in 50ms every 5ms, want several", calls)
	}
}
