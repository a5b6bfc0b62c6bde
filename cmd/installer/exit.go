package main

import (
	"errors"
	"fmt"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/stages"
)

// Exit codes. 2 means "fix your input": nothing was created or changed.
const (
	exitOK          = 0
	exitFailed      = 1
	exitBadInput    = 2
	exitInterrupted = 130
)

// usageError marks wrong flags or arguments.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// reportedError wraps an error whose details were already printed.
type reportedError struct {
	err  error
	code int
}

func (e reportedError) Error() string { return e.err.Error() }
func (e reportedError) Unwrap() error { return e.err }

func isReported(err error) bool {
	var r reportedError
	return errors.As(err, &r)
}

func exitCode(err error) int {
	var (
		rep  reportedError
		use  usageError
		list config.ErrorList
	)
	switch {
	case errors.As(err, &rep):
		return rep.code
	case errors.As(err, &use), errors.As(err, &list):
		return exitBadInput
	}
	return exitCodeFor(err)
}

// exitCodeFor maps engine and state errors: refusals that happen before
// anything changes are input errors.
func exitCodeFor(err error) int {
	switch {
	case errors.Is(err, stages.ErrInterrupted):
		return exitInterrupted
	case errors.Is(err, stages.ErrUnknownStage), errors.Is(err, stages.ErrConflictingOptions),
		errors.Is(err, stages.ErrPrerequisite), errors.Is(err, stages.ErrClusterMismatch):
		return exitBadInput
	}
	return exitFailed
}
