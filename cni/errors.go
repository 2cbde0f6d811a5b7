package cni

import (
	"errors"

	"github.com/containernetworking/cni/pkg/types"

	"weft.dev/weft/ipam"
)

// weft's own error codes (the spec leaves 100 and up to plugins).
const (
	// ErrCodeExists: the container ID and interface name already have an
	// attachment (a second ADD without DEL).
	ErrCodeExists uint = 101
	// ErrCodeExhausted: a pod CIDR has no free address.
	ErrCodeExhausted uint = 102
)

// typed turns err into a *types.Error with the best-fitting code; msg says
// what failed. A *types.Error inside err keeps its code.
func typed(msg string, err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	code := types.ErrInternal
	switch {
	case errors.Is(err, ipam.ErrLocked):
		code = types.ErrTryAgainLater
	case errors.Is(err, ipam.ErrExists):
		code = ErrCodeExists
	case errors.Is(err, ipam.ErrExhausted):
		code = ErrCodeExhausted
	case errors.Is(err, ipam.ErrNotFound):
		code = types.ErrUnknownContainer
	case errors.Is(err, ipam.ErrInvalid):
		code = types.ErrInvalidNetworkConfig
	}
	return types.NewError(code, msg+": "+err.Error(), "")
}
