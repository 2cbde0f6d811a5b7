package bgp

import (
	"context"
	"fmt"
	"log/slog"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logAdapter routes GoBGP's log lines into slog. GoBGP's Fatal and Panic
// are logged as errors and never end the process.
//
// GoBGP tells of a session closed for exceeding its prefix limit only in a
// log line (its peer state keeps no last error), so the adapter hands that
// line to onLimit (peer address, family).
type logAdapter struct {
	log     *slog.Logger
	onLimit func(peer, family string)
}

func newLogAdapter(l *slog.Logger, onLimit func(peer, family string)) gobgplog.Logger {
	return &logAdapter{log: l.With("component", "gobgp"), onLimit: onLimit}
}

// prefixLimitMsg is GoBGP's (v3) log message when a peer's adj-RIB-in count
// goes over its prefix limit: it sends a Cease "maximum number of prefixes
// reached" and closes the session. The same message with a "Pct" field is
// only the early warning of a shutdown threshold, which weft does not set.
const prefixLimitMsg = "prefix limit reached"

func (l *logAdapter) emit(level slog.Level, msg string, fields gobgplog.Fields) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		attrs = append(attrs, k, v)
	}
	l.log.Log(context.Background(), level, msg, attrs...)
}

func (l *logAdapter) Panic(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logAdapter) Fatal(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logAdapter) Error(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logAdapter) Warn(msg string, f gobgplog.Fields) {
	l.emit(slog.LevelWarn, msg, f)
	if _, early := f["Pct"]; msg == prefixLimitMsg && !early && l.onLimit != nil {
		peer, _ := f["Key"].(string)
		fam := ""
		if v, ok := f["Family"]; ok {
			fam = fmt.Sprint(v)
		}
		l.onLimit(peer, fam)
	}
}
func (l *logAdapter) Info(msg string, f gobgplog.Fields)  { l.emit(slog.LevelInfo, msg, f) }
func (l *logAdapter) Debug(msg string, f gobgplog.Fields) { l.emit(slog.LevelDebug, msg, f) }

// SetLevel is ignored: the slog handler decides.
func (l *logAdapter) SetLevel(gobgplog.LogLevel) {}

func (l *logAdapter) GetLevel() gobgplog.LogLevel {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
