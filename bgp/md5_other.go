//go:build !linux

package bgp

import "errors"

func md5Supported() error { return errors.New("TCP MD5 signatures are supported on Linux only") }
