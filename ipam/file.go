package ipam

import (
	"errors"
	"io/fs"

	"golang.org/x/sys/unix"
)

// maxRecord bounds what readSmall reads; a real record is under 512 bytes,
// a longer file is damaged and fails to parse.
const maxRecord = 4096

// readSmall reads a small file with plain system calls: os.ReadFile also
// registers the descriptor with the poller and stats it, which doubles the
// system calls of every store operation.
func readSmall(path string) ([]byte, error) {
	fd, err := openFile(path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 512)
	for len(buf) < maxRecord {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	return buf, nil
}

// openFile opens path close-on-exec, retrying on EINTR.
func openFile(path string, flags int, perm uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, perm)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// writeFile creates (flags decide: O_EXCL or O_TRUNC) and writes path with
// plain system calls. If mid is set it runs after the first half of data
// is written (a test step inside the write).
func writeFile(path string, flags int, data []byte, mid func() error) error {
	fd, err := openFile(path, unix.O_WRONLY|unix.O_CREAT|flags, 0o644)
	if err != nil {
		return err
	}
	half := len(data)
	if mid != nil {
		half /= 2
	}
	err = writeAll(fd, data[:half])
	if err == nil && mid != nil {
		err = mid()
	}
	if err == nil {
		err = writeAll(fd, data[half:])
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
