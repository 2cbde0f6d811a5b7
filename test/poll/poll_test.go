package poll

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
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

func TestErr(t *testing.T) {
	calls := 0
	if err := Err(t.Context(), 5*time.Second, time.Millisecond, func() error {
		calls++
		if calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	}); err != nil || calls != 3 {
		t.Errorf("Err = %v after %d calls, want nil after 3", err, calls)
	}
	err := Err(t.Context(), 30*time.Millisecond, 5*time.Millisecond, func() error { return errors.New("still down") })
	if err == nil || !strings.Contains(err.Error(), "still down") {
		t.Errorf("Err after the timeout = %v, want the last error", err)
	}
	calls = 0
	err = Err(t.Context(), 5*time.Second, time.Millisecond, func() error {
		calls++
		return fmt.Errorf("process exited: %w", ErrStop)
	})
	if !errors.Is(err, ErrStop) || calls != 1 {
		t.Errorf("Err with ErrStop = %v after %d calls, want ErrStop after 1", err, calls)
	}
}
