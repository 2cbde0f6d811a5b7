package nsrun_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"

	"weft.dev/weft/overlay/nsrun"
	"weft.dev/weft/test/nstest"
)

func inode(path string) (uint64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Sys().(*syscall.Stat_t).Ino, nil
}

// TestIn checks that fn runs inside the namespace while the process's main
// thread stays outside (even with many calls at once), that sockets made in
// fn stay inside, and that fn's error comes back.
func TestIn(t *testing.T) {
	ns := nstest.New(t, "nsrun")
	want, err := inode(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	mainThread := fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			errs <- nsrun.In(ns.Path, func() error {
				cur, err := netns.Get()
				if err != nil {
					return err
				}
				defer cur.Close()
				var st syscall.Stat_t
				if err := syscall.Fstat(int(cur), &st); err != nil {
					return err
				}
				if st.Ino != want {
					return errors.New("fn did not run in the namespace")
				}
				if m, err := inode(mainThread); err != nil || m == want {
					return fmt.Errorf("the main thread is inside the namespace (%v)", err)
				}
				return nil
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	// A listener made inside is on the namespace's loopback, not ours.
	var ln net.Listener
	if err := nsrun.In(ns.Path, func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Errorf("a listener made inside the namespace answered from outside")
	}

	sentinel := errors.New("from fn")
	if err := nsrun.In(ns.Path, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("In returned %v, want fn's error", err)
	}
	if err := nsrun.In("/nonexistent/ns", func() error { return nil }); err == nil {
		t.Errorf("In with a missing namespace succeeded")
	}
	if m, err := inode(mainThread); err != nil || m == want {
		t.Errorf("after the calls the main thread is inside the namespace (%v)", err)
	}
}
