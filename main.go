// Command lastevent is a reverse proxy that makes the Server-Sent Events
// streams of an unchanged upstream resumable. It is configured through
// LASTEVENT_* environment variables; see README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/lastevent/lastevent/proxy"
)

// Stamped at build time with -ldflags "-X main.version=... -X main.revision=...".
var (
	version  = "dev"
	revision = "unknown"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr, nil))
}

// run is the whole program; stop, when not nil, replaces the OS signals (for
// tests). It returns the exit status: 2 for bad usage or configuration.
func run(args, environ []string, stdout, stderr io.Writer, stop <-chan os.Signal) int {
	fs := flag.NewFlagSet("lastevent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	checkConfig := fs.Bool("check-config", false, "validate the LASTEVENT_* configuration and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: lastevent [-check-config] [-version]\n\nlastevent is configured through environment variables:\n")
		for _, p := range proxy.Variables() {
			fmt.Fprintf(stderr, "  %s (default %q)\n", p.Key, p.DefaultValue)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0 // -h asked for the usage
		}
		return 2
	}
	if fs.NArg() > 0 {
		// Flags stop at the first argument: "lastevent check -check-config"
		// would start the server.
		fmt.Fprintf(stderr, "lastevent: unexpected argument %q (it takes flags only; its configuration is LASTEVENT_* variables)\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	if *showVersion {
		fmt.Fprintf(stdout, "lastevent %s (revision %s)\n", version, revision)
		return 0
	}
	cfg, warnings, err := proxy.LoadConfig(environ)
	if err != nil || *checkConfig {
		// Plain text: there is no logger (its settings may be the problem).
		for _, w := range warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "lastevent: invalid configuration:\n%s\n", indent(err.Error()))
		return 2
	}
	if *checkConfig {
		fmt.Fprintln(stdout, "configuration ok")
		return 0
	}
	log := proxy.NewLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	for _, w := range warnings {
		log.Warn().Msg(w) // in the log's format, which a JSON pipeline can read
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		log.Error().Err(err).Str("var", "LASTEVENT_LISTEN_ADDR").Msg("cannot listen")
		return 1
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		ln.Close()
		log.Error().Err(err).Str("var", "LASTEVENT_ADMIN_ADDR").Msg("cannot listen")
		return 1
	}
	srv := proxy.NewServer(&cfg, log, version)
	if stop == nil {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(sig)
		stop = sig
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln, adminLn) }()
	log.Info().Str("listen", ln.Addr().String()).Str("admin", adminLn.Addr().String()).
		Str("upstream", cfg.Upstream.Redacted()).Str("mode", cfg.Mode.String()).Str("version", version).
		Object("config", &cfg).Msg("lastevent started")
	select {
	case err := <-errc:
		log.Error().Err(err).Msg("server stopped")
		return 1
	case s := <-stop:
		log.Info().Str("signal", s.String()).Dur("grace", cfg.ShutdownGrace).Msg("shutting down: draining streams")
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	go func() {
		// A second signal (Ctrl-C again) ends the grace period at once.
		select {
		case s, ok := <-stop:
			if ok && s != nil {
				log.Warn().Str("signal", s.String()).Msg("second signal: not waiting for the rest of the grace period")
				cancel()
			}
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn().Err(err).Msg("shutdown incomplete")
		return 1
	}
	log.Info().Msg("shutdown complete")
	return 0
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }
