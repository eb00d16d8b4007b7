package proxy

import (
	"io"
	"time"

	"github.com/rs/zerolog"
)

// NewLogger returns the process logger: JSON by default, console for humans.
// Levels are validated by Config; an empty level means info (zerolog would
// read it as a level that silences even errors).
func NewLogger(w io.Writer, level, format string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("app", "lastevent").Logger()
}
