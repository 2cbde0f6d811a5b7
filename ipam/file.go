package ipam

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"golang.org/x/sys/unix"
)

// errNotRegular marks a store entry that is not a regular file (a directory,
// a FIFO, a symbolic link, a device): never a reservation, and never opened
// in a way that could block or follow it elsewhere.
var errNotRegular = errors.New("not a regular file")

// entryFlags open every store file: no symbolic link is followed (ELOOP),
// and opening a FIFO or device never blocks.
const entryFlags = unix.O_NOFOLLOW | unix.O_NONBLOCK

// requireRegular fails unless fd is a regular file.
func requireRegular(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (%s)", errNotRegular, kind(st.Mode))}
	}
	return nil
}

// fileKind names fi's type for a log line.
func fileKind(fi fs.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return kind(uint32(st.Mode))
	}
	return fi.Mode().Type().String()
}

// kind names a file type for a log line.
func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device"
	}
	return "regular file"
}

// maxRecord bounds what readSmall reads; a real record is under 512 bytes,
// a longer file is damaged and fails to parse.
const maxRecord = 4096

// readSmall reads a small regular file with plain system calls: os.ReadFile
// also registers the descriptor with the poller, which adds system calls to
// every store operation. Anything but a regular file fails with an error
// wrapping errNotRegular, without blocking.
func readSmall(path string) ([]byte, error) {
	fd, err := openFile(path, unix.O_RDONLY|entryFlags, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := requireRegular(fd, path); err != nil {
		return nil, err
	}
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

// openFile opens path close-on-exec, retrying on EINTR. With O_NOFOLLOW,
// a symbolic link fails with an error wrapping errNotRegular.
func openFile(path string, flags int, perm uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, perm)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ELOOP) && flags&unix.O_NOFOLLOW != 0 {
			return -1, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (symbolic link)", errNotRegular)}
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
// Like readSmall it never follows a link, blocks on a FIFO or writes
// anything but a regular file.
func writeFile(path string, flags int, data []byte, mid func() error) error {
	fd, err := openFile(path, unix.O_WRONLY|unix.O_CREAT|entryFlags|flags, 0o644)
	if err != nil {
		return err
	}
	if err := requireRegular(fd, path); err != nil {
		unix.Close(fd)
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
