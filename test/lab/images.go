package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"weft.dev/weft/test/lab/image"
)

// The images a real node runs, under the names Kubernetes v1.37.2 and its
// e2e suite use, so nothing is ever pulled: the lab builds each once into
// Options.ImageDir from what is on the machine and imports it into every
// node's containerd.
const (
	PauseImage   = "registry.k8s.io/pause:3.10.2"
	BusyboxImage = "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"
	AgnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	CoreDNSImage = "registry.k8s.io/coredns/coredns:v1.14.7"
	// NginxImage is the e2e suite's nginx, which its Endpoints and
	// EndpointSlice tests run as a plain web server: here a stand-in,
	// agnhost serving HTTP on port 80 (nginx's).
	NginxImage = "registry.k8s.io/e2e-test-images/nginx:1.27.0-2"
	// GlibcDNSImage is the e2e suite's glibc resolver prober for its DNS
	// tests (dig in a glibc userland): here a stand-in, the agnhost image,
	// whose bash, dig and curl are glibc's.
	GlibcDNSImage = "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1"
)

// labImage is one image: its archive name and how to make its spec.
type labImage struct {
	file string
	spec func(l *Lab) (image.Spec, error)
}

var labImages = []labImage{
	{"pause.tar", pauseSpec},
	{"busybox.tar", busyboxSpec},
	{"agnhost.v2.tar", agnhostSpec}, // v2: bash, curl, dig, ip (a new spec needs a new name: archives are kept by name)
	{"coredns.tar", corednsSpec},
	{"nginx.tar", nginxSpec},
	{"glibc-dns-testing.tar", glibcDNSSpec},
}

// imageBuildMu serialises builds of the shared image archives within a
// process; across processes the archives are written by rename.
var imageBuildMu sync.Mutex

// ensureImages builds the missing image archives and returns every archive
// a node imports: the lab's images and weft's own (make image).
func (l *Lab) ensureImages() ([]string, error) {
	imageBuildMu.Lock()
	defer imageBuildMu.Unlock()
	var out []string
	for _, im := range labImages {
		file := filepath.Join(l.opts.ImageDir, im.file)
		out = append(out, file)
		if _, err := os.Stat(file); err == nil {
			continue
		}
		s, err := im.spec(l)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", im.file, err)
		}
		if err := image.Write(file, s); err != nil {
			return nil, err
		}
		l.log.Info("image built", "image", s.Ref, "file", file)
	}
	weft := l.opts.WeftImage
	if _, err := os.Stat(weft); err != nil {
		return nil, fmt.Errorf("no weft image %s (run `make image`)", weft)
	}
	return append(out, weft), nil
}

func pauseSpec(l *Lab) (image.Spec, error) {
	bin := filepath.Join(l.opts.BinDir, "pause")
	if _, err := os.Stat(bin); err != nil {
		return image.Spec{}, fmt.Errorf("no %s (run `make build`)", bin)
	}
	return image.Spec{Ref: PauseImage, Entrypoint: []string{"/pause"},
		Files: []image.File{{Path: "pause", Src: bin}}}, nil
}

// busyboxRoot is Debian's static busybox with a link per applet, and the
// files a shell user expects.
func busyboxRoot(l *Lab) ([]image.File, error) {
	bb := filepath.Join(l.opts.RuntimeDir, "deb", "bin", "busybox")
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w (run `make runtime`)", bb, err)
	}
	files := []image.File{
		{Path: "bin/busybox", Src: bb},
		{Path: "etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{Path: "etc/group", Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Path: "etc/nsswitch.conf", Data: []byte("hosts: files dns\n")},
		{Path: "tmp", Dir: true, Mode: 0o1777},
		{Path: "root", Dir: true, Mode: 0o700},
	}
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" {
			files = append(files, image.File{Path: "bin/" + a, Link: "busybox"})
		}
	}
	return files, nil
}

func busyboxSpec(l *Lab) (image.Spec, error) {
	files, err := busyboxRoot(l)
	if err != nil {
		return image.Spec{}, err
	}
	return image.Spec{Ref: BusyboxImage, Cmd: []string{"sh"}, Files: files}, nil
}

// agnhostSpec is the e2e suite's test server on the busybox root, with
// OpenBSD netcat (busybox's nc has no -u) and the libraries it links.
func agnhostSpec(l *Lab) (image.Spec, error) {
	files, err := busyboxRoot(l)
	if err != nil {
		return image.Spec{}, err
	}
	bin := filepath.Join(l.opts.K8sBinDir, "agnhost")
	if _, err := os.Stat(bin); err != nil {
		return image.Spec{}, fmt.Errorf("no %s (run `make k8s`)", bin)
	}
	// The suite's commands run in /bin/sh and call nc with options
	// busybox's applet lacks, curl, dig and ip: bash as /bin/sh (busybox's sh
	// would run its own applets before PATH), OpenBSD netcat, and the
	// machine's curl, dig and ip (Debian's, see test/deps.sh), each with the
	// libraries it links.
	tools := map[string]string{
		"usr/bin/nc":   filepath.Join(l.opts.RuntimeDir, "deb", "bin", "nc.openbsd"),
		"usr/bin/bash": "/usr/bin/bash",
		"usr/bin/curl": "/usr/bin/curl",
		"usr/bin/dig":  "/usr/bin/dig",
		"usr/sbin/ip":  "/usr/bin/ip",
	}
	files = append(files,
		image.File{Path: "agnhost", Src: bin},
		image.File{Path: "agnhost-2", Link: "agnhost"},
		image.File{Path: "uploads", Dir: true, Mode: 0o777},
	)
	libs := map[string]bool{}
	for _, path := range slices.Sorted(maps.Keys(tools)) {
		src, err := filepath.EvalSymlinks(tools[path])
		if err != nil {
			return image.Spec{}, fmt.Errorf("agnhost image needs %s: %w", tools[path], err)
		}
		files = append(files, image.File{Path: path, Src: src})
		ls, err := sharedLibs(src)
		if err != nil {
			return image.Spec{}, err
		}
		for _, lib := range ls {
			libs[lib] = true
		}
	}
	for _, lib := range slices.Sorted(maps.Keys(libs)) {
		files = append(files, image.File{Path: lib, Src: lib})
	}
	// busybox's applets give way to the real ones.
	link := map[string]string{"bin/nc": "/usr/bin/nc", "bin/sh": "/usr/bin/bash", "bin/bash": "/usr/bin/bash",
		"bin/ip": "/usr/sbin/ip", "sbin/ip": "/usr/sbin/ip"}
	for i := range files {
		if to, ok := link[files[i].Path]; ok {
			files[i] = image.File{Path: files[i].Path, Link: to}
			delete(link, files[i].Path)
		}
	}
	for _, path := range slices.Sorted(maps.Keys(link)) {
		if path == "bin/bash" {
			files = append(files, image.File{Path: path, Link: link[path]})
		}
	}
	return image.Spec{Ref: AgnhostImage, Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, Files: files}, nil
}

// nginxSpec is the stand-in for the suite's nginx: the agnhost image
// serving HTTP on port 80.
func nginxSpec(l *Lab) (image.Spec, error) {
	s, err := agnhostSpec(l)
	if err != nil {
		return image.Spec{}, err
	}
	s.Ref, s.Entrypoint, s.Cmd = NginxImage, []string{"/agnhost", "netexec", "--http-port=80", "--udp-port=-1"}, nil
	return s, nil
}

// glibcDNSSpec is the stand-in for the suite's glibc DNS prober.
func glibcDNSSpec(l *Lab) (image.Spec, error) {
	s, err := agnhostSpec(l)
	if err != nil {
		return image.Spec{}, err
	}
	s.Ref = GlibcDNSImage
	return s, nil
}

func corednsSpec(l *Lab) (image.Spec, error) {
	bin := filepath.Join(l.opts.RuntimeDir, "coredns")
	if _, err := os.Stat(bin); err != nil {
		return image.Spec{}, fmt.Errorf("no %s (run `make runtime`)", bin)
	}
	return image.Spec{Ref: CoreDNSImage, Entrypoint: []string{"/coredns"},
		Files: []image.File{{Path: "coredns", Src: bin}, {Path: "etc/coredns", Dir: true}}}, nil
}

var lddPath = regexp.MustCompile(`(/[^ ]+) \(0x`)

// sharedLibs lists the shared libraries (and the loader) a binary needs,
// as ldd resolves them on this machine.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, bytes.TrimSpace(out))
	}
	var libs []string
	for _, m := range lddPath.FindAllStringSubmatch(string(out), -1) {
		libs = append(libs, m[1]) // the name ldd found; image.File reads through links
	}
	if len(libs) == 0 {
		return nil, errors.New("ldd " + bin + ": no libraries")
	}
	return libs, nil
}

// importImages imports every image archive into a node's containerd.
func (l *Lab) importImages(ctx context.Context, node string) error {
	files, err := l.ensureImages()
	if err != nil {
		return err
	}
	for _, f := range files {
		out, err := exec.CommandContext(ctx, l.runtimeBin("ctr"), "-a", l.containerdSock(node), "-n", "k8s.io",
			"images", "import", f).CombinedOutput()
		if err != nil {
			return fmt.Errorf("node %s: import %s: %w: %s", node, f, err, bytes.TrimSpace(out))
		}
	}
	return nil
}
