package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The lab's echo server and HTTP client run inside pod (or node) namespaces
// as the weft-lab binary itself, started with `ip netns exec`: no image, no
// external tool. The server answers every request with one Echo as JSON:
// who answered and the client address it saw, so a test can tell which
// backend a Service picked and whether the source address was translated.
// The client (Fetch) makes each request on a new connection, so every
// request is a new flow through the Service's load balancing.
//
//	weft-lab serve N NAME PORT          starts `weft-lab _serve NAME PORT` in NAME
//	weft-lab fetch N FROM URL [COUNT]   runs `weft-lab _fetch ...` in FROM
//
// A pod's server keeps its pid in <nodeDir>/pods/<pod>.serve-<port>.pid and
// its output in <nodeDir>/pods/<pod>.serve-<port>.log (a node's in
// <nodeDir>/serve-<port>.*); it dies with the lab (every process inside a
// lab namespace is killed on down) or with ServeStop.

// Echo is the echo server's answer.
type Echo struct {
	Server string `json:"server"` // the node or pod that answered (as given to Serve)
	Client string `json:"client"` // remote address of the connection, ip:port
}

// ClientAddr is the address part of Client.
func (e Echo) ClientAddr() (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(e.Client)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("echo client %q: %w", e.Client, err)
	}
	return ap.Addr().Unmap(), nil
}

// EchoHandler answers every request with Echo{server, remote address}.
func EchoHandler(server string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Echo{Server: server, Client: r.RemoteAddr})
	})
}

// ServeEcho runs the echo server on ln until ctx ends.
func ServeEcho(ctx context.Context, ln net.Listener, server string) error {
	srv := &http.Server{Handler: EchoHandler(server), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}

func (l *Lab) labBin() string { return filepath.Join(l.opts.BinDir, "weft-lab") }

// serveFile is where the echo server of a node or pod (see Resolve) on
// port keeps its pid and output: <nodeDir>/pods/<pod>.serve-<port>.<ext>
// for a pod, <nodeDir>/serve-<port>.<ext> for a node.
func (l *Lab) serveFile(name string, port uint16, ext string) (string, error) {
	ns, err := l.Resolve(name)
	if err != nil {
		return "", err
	}
	rest := strings.TrimPrefix(ns, labNSPrefix(l.Name))
	node, pod, isPod := strings.Cut(rest, ".")
	if isPod {
		return filepath.Join(l.NodeDir(node), "pods", fmt.Sprintf("%s.serve-%d.%s", pod, port, ext)), nil
	}
	return filepath.Join(l.NodeDir(node), fmt.Sprintf("serve-%d.%s", port, ext)), nil
}

// ServePid is the pid of the echo server of a node or pod on port, 0 when
// none runs.
func (l *Lab) ServePid(name string, port uint16) int {
	f, err := l.serveFile(name, port, "pid")
	if err != nil {
		return 0
	}
	return pidFromFile(f)
}

// Serve starts the echo server in a node or pod (name as for Resolve) on
// port (all its addresses), detached, and returns once it accepts
// connections. It answers with name as Echo.Server. A server that runs
// already is kept.
func (l *Lab) Serve(ctx context.Context, name string, port uint16) error {
	if port == 0 {
		return fmt.Errorf("serve in %s: port 0", name)
	}
	ns, err := l.Resolve(name)
	if err != nil {
		return err
	}
	pidf, err := l.serveFile(name, port, "pid")
	if err != nil {
		return err
	}
	logf, _ := l.serveFile(name, port, "log")
	if pidFromFile(pidf) > 0 {
		return nil
	}
	if fi, err := os.Stat(l.labBin()); err != nil || fi.IsDir() {
		return fmt.Errorf("serve in %s: no weft-lab binary at %s (run `make build`)", name, l.labBin())
	}
	lf, err := os.OpenFile(logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("serve in %s: log: %w", name, err)
	}
	defer lf.Close()
	cmd := exec.Command("ip", "netns", "exec", ns, l.labBin(), "_serve", name, strconv.Itoa(int(port)))
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("serve in %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	if err := os.WriteFile(pidf, fmt.Appendf(nil, "%d\n", pid), 0o644); err != nil {
		return err
	}
	// Ready when a connection from inside the namespace succeeds.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		err := inNS(ns, func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			l.log.Info("echo server started", "in", name, "port", port, "pid", pid)
			return nil
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(logf)
			return fmt.Errorf("echo server in %s exited: %s", name, strings.TrimSpace(string(out)))
		case <-deadline:
			return fmt.Errorf("echo server in %s: not listening on %d after 10s: %w", name, port, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// ServeStop stops the echo server of a node or pod on port; none running is
// not an error.
func (l *Lab) ServeStop(name string, port uint16) error {
	pidf, err := l.serveFile(name, port, "pid")
	if err != nil {
		return err
	}
	if pid := pidFromFile(pidf); pid > 0 {
		killAll([]int{pid}, time.Second)
	}
	if err := os.Remove(pidf); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// FetchOptions shape a series of requests.
type FetchOptions struct {
	Count    int           // requests to make; with Duration: 0 means until Duration ends
	Rate     float64       // requests per second; 0: one after the other
	Duration time.Duration // stop starting requests after this long (0: Count alone)
	Timeout  time.Duration // per request; default 2s
}

// FetchResult is one request's outcome.
type FetchResult struct {
	Start time.Time     `json:"start"`
	Took  time.Duration `json:"took"`
	Echo  *Echo         `json:"echo,omitempty"`
	Err   string        `json:"err,omitempty"`
}

func (o FetchOptions) validate() error {
	switch {
	case o.Count < 0:
		return fmt.Errorf("fetch count %d: negative", o.Count)
	case o.Rate < 0:
		return fmt.Errorf("fetch rate %g: negative", o.Rate)
	case o.Duration < 0:
		return fmt.Errorf("fetch duration %s: negative", o.Duration)
	case o.Count == 0 && o.Duration == 0:
		return errors.New("fetch: want a count or a duration")
	}
	return nil
}

func (o FetchOptions) args() []string {
	return []string{
		"-count=" + strconv.Itoa(o.Count),
		"-rate=" + strconv.FormatFloat(o.Rate, 'g', -1, 64),
		"-duration=" + o.Duration.String(),
		"-timeout=" + o.Timeout.String(),
	}
}

// FetchAll makes the requests o describes to url from the current network
// namespace and writes one FetchResult per line (JSON) to w, in the order
// the requests were started. Failed requests are results, not errors.
func FetchAll(ctx context.Context, url string, o FetchOptions, w io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	client := &http.Client{
		Timeout:   o.Timeout,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	var tick <-chan time.Time
	if o.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / o.Rate))
		defer t.Stop()
		tick = t.C
	}
	var end <-chan time.Time
	if o.Duration > 0 {
		end = time.After(o.Duration)
	}
	results := make(chan chan FetchResult, 1024)
	done := make(chan error, 1)
	go func() { // write in start order
		enc := json.NewEncoder(w)
		var err error
		for rc := range results {
			if e := enc.Encode(<-rc); e != nil && err == nil {
				err = e
			}
		}
		done <- err
	}()
loop:
	for i := 0; o.Count == 0 || i < o.Count; i++ {
		if i > 0 && tick != nil {
			select {
			case <-tick:
			case <-end:
				break loop
			case <-ctx.Done():
				break loop
			}
		}
		select {
		case <-end:
			break loop
		case <-ctx.Done():
			break loop
		default:
		}
		rc := make(chan FetchResult, 1)
		results <- rc
		if tick == nil {
			rc <- fetchOne(ctx, client, url)
			continue
		}
		go func() { rc <- fetchOne(ctx, client, url) }()
	}
	close(results)
	return <-done
}

func fetchOne(ctx context.Context, client *http.Client, url string) FetchResult {
	r := FetchResult{Start: time.Now()}
	defer func() { r.Took = time.Since(r.Start) }()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	resp, err := client.Do(req)
	if err != nil {
		r.Err = err.Error()
		r.Took = time.Since(r.Start)
		return r
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.Err = resp.Status
		r.Took = time.Since(r.Start)
		return r
	}
	var e Echo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e); err != nil {
		r.Err = fmt.Sprintf("decode answer: %v", err)
	} else {
		r.Echo = &e
	}
	r.Took = time.Since(r.Start)
	return r
}

// Fetch runs the lab's HTTP client (`weft-lab _fetch`) inside a node or pod
// (see Resolve) and returns one result per request.
func (l *Lab) Fetch(ctx context.Context, from, url string, o FetchOptions) ([]FetchResult, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(l.labBin()); err != nil || fi.IsDir() {
		return nil, fmt.Errorf("fetch from %s: no weft-lab binary at %s (run `make build`)", from, l.labBin())
	}
	cmd, err := l.Command(ctx, from, append(append([]string{l.labBin(), "_fetch"}, o.args()...), url)...)
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("fetch from %s: %w", from, err)
	}
	var res []FetchResult
	sc := bufio.NewScanner(out)
	var perr error
	for sc.Scan() {
		var r FetchResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil && perr == nil {
			perr = fmt.Errorf("fetch from %s: parse %q: %w", from, sc.Text(), err)
		}
		res = append(res, r)
	}
	if err := cmd.Wait(); err != nil {
		return res, fmt.Errorf("fetch from %s: %w: %s", from, err, strings.TrimSpace(stderr.String()))
	}
	return res, perr
}

// Spread counts the answers of each server and the failed requests.
func Spread(res []FetchResult) (byServer map[string]int, failed int) {
	byServer = map[string]int{}
	for _, r := range res {
		if r.Echo == nil {
			failed++
			continue
		}
		byServer[r.Echo.Server]++
	}
	return byServer, failed
}
